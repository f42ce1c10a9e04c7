//! AFL++ target: `palisade::fuzzing::manifest` on each input.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        palisade::fuzzing::manifest(data);
    });
}
