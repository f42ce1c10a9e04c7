//! AFL++ target: `palisade::fuzzing::selector` on each input.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        palisade::fuzzing::selector(data);
    });
}
