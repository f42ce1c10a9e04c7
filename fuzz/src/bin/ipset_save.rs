//! AFL++ target: `palisade::fuzzing::ipset_save` on each input.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        palisade::fuzzing::ipset_save(data);
    });
}
