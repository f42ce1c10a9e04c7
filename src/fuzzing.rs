//! The entry points of the fuzz targets (`fuzz/`, `make fuzz`), and of the test that replays
//! their corpus (`tests/fuzz_corpus.rs`): each parser Palisade runs on text from outside,
//! given arbitrary bytes. Each must return (an error is fine), never panic or hang.

use std::path::Path;

use crate::manifest::{load_text, Manifests};

/// The manifest loader, YAML or JSON by the first byte, into the model (Kubernetes and Calico
/// kinds), then compiled for a node so conversions that only show in the index run too.
pub fn manifest(data: &[u8]) {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let path = if first % 2 == 0 {
        "fuzz.yaml"
    } else {
        "fuzz.json"
    };
    let mut manifests = Manifests::default();
    load_text(Path::new(path), text, &mut manifests);
    let nodes: Vec<String> = manifests
        .pods
        .iter()
        .filter_map(|pod| pod.node.as_deref().map(str::to_string))
        .take(2)
        .collect();
    let index = manifests.into_index();
    for node in nodes {
        let _ = crate::compiler::compile(&index, &node, crate::compiler::Marks::default());
    }
}

/// The Calico selector parser; what parses is printed canonically and parsed again, which
/// must give the same selector.
pub fn selector(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(selector) = crate::selector::Selector::parse(text) {
        let canonical = selector.to_string();
        match crate::selector::Selector::parse(&canonical) {
            Ok(again) => assert_eq!(
                again.to_string(),
                canonical,
                "the canonical form of {text:?} does not parse back to itself"
            ),
            Err(error) => {
                panic!("the canonical form {canonical:?} of {text:?} does not parse: {error}")
            }
        }
    }
}

/// The `iptables-save` parser the dataplane reads the kernel with.
pub fn iptables_save(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::dataplane::parse_filter_save_for_fuzzing(&text);
}

/// The `ipset save` parser.
pub fn ipset_save(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::dataplane::parse_ipset_save_for_fuzzing(&text);
}
