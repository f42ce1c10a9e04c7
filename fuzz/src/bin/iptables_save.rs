//! AFL++ target: `palisade::fuzzing::iptables_save` on each input.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        palisade::fuzzing::iptables_save(data);
    });
}
