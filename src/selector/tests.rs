//! The selector language against the cases of Calico's own parser, label-restriction and
//! label-index tests (`libcalico-go/lib/selector/parser`, `felix/labelindex`), plus Calico's
//! label inheritance and the conversion of Kubernetes selectors.

use std::collections::BTreeMap;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect()
}

fn sel(text: &str) -> Selector {
    Selector::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

type Maps = &'static [&'static [(&'static str, &'static str)]];

/// Calico's `selectorTests`: each selector, labels it matches, labels it does not.
const MATCHING: &[(&str, Maps, Maps)] = &[
    (
        r#"a == "b""#,
        &[&[("a", "b")], &[("a", "b"), ("c", "d")]],
        &[&[], &[("a", "c")], &[("c", "d")]],
    ),
    (
        r#"a == "b" && c == "d""#,
        &[&[("a", "b"), ("c", "d")]],
        &[
            &[],
            &[("a", "b"), ("c", "e")],
            &[("a", "c"), ("c", "d")],
            &[("c", "d")],
            &[("a", "b")],
        ],
    ),
    (
        r#"a == "b" || c == "d""#,
        &[&[("a", "b"), ("c", "d")], &[("a", "b")], &[("c", "d")]],
        &[&[], &[("a", "e"), ("c", "e")], &[("c", "e")], &[("a", "e")]],
    ),
    (
        r#"a in {"'", '"', "c"}"#,
        &[&[("a", "c")], &[("a", "\"")], &[("a", "'")]],
        &[&[], &[("a", "e")]],
    ),
    (
        r#"a not in {"'", '"', "c"}"#,
        &[&[], &[("a", "e")]],
        &[&[("a", "c")], &[("a", "\"")], &[("a", "'")]],
    ),
    ("a == 'a'", &[&[("a", "a")]], &[]),
    (r#"a == "a""#, &[&[("a", "a")]], &[]),
    (r#"a != "b""#, &[&[("a", "a")]], &[]),
    (r#"a != "a""#, &[&[]], &[]),
    (
        r#"a contains "a""#,
        &[&[("a", "a")], &[("a", "bab")], &[("a", "aaa"), ("b", "c")]],
        &[&[], &[("a", "b")], &[("b", "aaa")]],
    ),
    (
        r#"a starts with "a""#,
        &[&[("a", "a")], &[("a", "abb")], &[("a", "aaa"), ("b", "c")]],
        &[&[], &[("a", "b")], &[("a", "baa")], &[("b", "aaa")]],
    ),
    (
        r#"a ends with "a""#,
        &[&[("a", "a")], &[("a", "bba")], &[("a", "aaa"), ("b", "c")]],
        &[&[], &[("a", "b")], &[("a", "aab")], &[("b", "aaa")]],
    ),
    (r#"a in {"a"}"#, &[&[("a", "a")]], &[]),
    (r#"!a in {"a"}"#, &[&[("a", "b")]], &[]),
    (r#"a in {"a", "b"}"#, &[&[("a", "a")]], &[]),
    (r#"a in {"a", "b"}"#, &[&[("a", "b")]], &[]),
    (r#"a not in {"d", "e"}"#, &[&[("a", "a")]], &[]),
    ("has(a)", &[&[("a", "b")]], &[]),
    ("!has(a)", &[&[("b", "b")]], &[]),
    ("", &[&[]], &[]),
    (" ", &[&[]], &[]),
    ("", &[&[("a", "b")]], &[]),
    ("all()", &[&[]], &[]),
    (" all()", &[&[]], &[]),
    (" all()", &[&[("a", "b")]], &[]),
    ("global()", &[&[]], &[]),
    (" global()", &[&[]], &[]),
    (" global()", &[&[("a", "b")]], &[]),
    ("a == 'a'", &[], &[&[("a", "b")]]),
    ("a == 'a'", &[], &[&[]]),
    (r#"a != "a""#, &[], &[&[("a", "a")]]),
    ("a != 'a'", &[], &[&[("a", "a")]]),
    (r#"a in {"a"}"#, &[], &[&[("a", "b")]]),
    (r#"a not in {"a"}"#, &[], &[&[("a", "a")]]),
    (r#"a in {"a", "b"}"#, &[], &[&[("a", "c")]]),
    ("has(b)", &[], &[&[("a", "b")]]),
    ("!!has(b)", &[], &[&[("a", "b")]]),
    ("! has(a)", &[], &[&[("a", "b")]]),
    ("!has(a)", &[], &[&[("a", "b")]]),
    ("!!! has(a)", &[], &[&[("a", "b")]]),
    ("!!!has(a)", &[], &[&[("a", "b")]]),
    ("!! ! has(a)", &[], &[&[("a", "b")]]),
    ("! !!has(a)", &[], &[&[("a", "b")]]),
    (
        "a == 'a1' && b == 'b1'",
        &[&[("a", "a1"), ("b", "b1")]],
        &[],
    ),
    (
        "a == 'a1' && b != 'b1'",
        &[],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
    (
        "a != 'a1' && b == 'b1'",
        &[],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
    (
        "a != 'a1' && b != 'b1'",
        &[],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
    (
        "a != 'a1' && !b == 'b1'",
        &[],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
    (
        "!a == 'a1' && b == 'b1'",
        &[],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
    ("has(a) && !has(b)", &[&[("a", "a")]], &[]),
    ("!has(b) && has(a)", &[&[("a", "a")]], &[]),
    ("!(!has(a) || has(b))", &[&[("a", "a")]], &[]),
    ("!(has(b) || !has(a))", &[&[("a", "a")]], &[]),
    (
        "a == 'a1' || b == 'b1'",
        &[&[("a", "a1"), ("b", "b1")]],
        &[],
    ),
    (
        "a == 'a1' || b != 'b1'",
        &[&[("a", "a1"), ("b", "b1")]],
        &[],
    ),
    (
        "a != 'a1' || b == 'b1'",
        &[&[("a", "a1"), ("b", "b1")]],
        &[],
    ),
    (
        "a != 'a1' || b != 'b1'",
        &[],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
    (
        "! a == 'a1' || ! b == 'b1'",
        &[],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
    // Not in Calico's table: empty sets and trailing commas, which its parser accepts.
    ("a in {}", &[], &[&[], &[("a", "")]]),
    ("a not in {}", &[&[], &[("a", "x")]], &[]),
    ("a in {'x',}", &[&[("a", "x")]], &[&[("a", "y")]]),
    ("has(a)", &[&[("a", "")]], &[]),
    ("a contains ''", &[&[("a", "")], &[("a", "x")]], &[&[]]),
];

#[test]
fn matches_as_calico_does_before_and_after_canonicalising() {
    for (text, yes, no) in MATCHING {
        let selector = sel(text);
        let canonical = sel(&selector.to_string());
        for pairs in yes.iter() {
            let l = labels(pairs);
            assert!(selector.matches(&l), "{text:?} should match {l:?}");
            assert!(
                canonical.matches(&l),
                "{canonical} (from {text:?}) should match {l:?}"
            );
        }
        for pairs in no.iter() {
            let l = labels(pairs);
            assert!(!selector.matches(&l), "{text:?} should not match {l:?}");
            assert!(
                !canonical.matches(&l),
                "{canonical} (from {text:?}) should not match {l:?}"
            );
        }
    }
}

#[test]
fn rejects_what_calico_rejects() {
    let bad = [
        "b == b",
        "b contains b",
        "b starts with b",
        "b ends with b",
        "'b1' == b",
        "b",
        "a b",
        "!",
        r#"foo == "bar" &"#,
        r#"foo == "bar" |"#,
        "foo != ||",
        r#"foo in {"", ||"#,
        r#"foo in """#,
        r#""FOO"#,
        r#""FOO'"#,
        "'FOO",
        "(",
        r#"(a == "foo""#,
        ")",
        "()",
        "%",
        r#"a == "b" && %"#,
        r#"a == "b" || %"#,
        "a ",
        "has(foo) &&",
        // Beyond Calico's list: the lexical rules of its tokenizer.
        "a == 'b'\n",
        "has (a)",
        "a in {'x' 'y'}",
        "a in {,}",
        "a = 'b'",
        "a == 'b' && && c == 'd'",
    ];
    for text in bad {
        assert!(Selector::parse(text).is_err(), "{text:?} should not parse");
    }
}

#[test]
fn canonical_text_is_calicos() {
    let cases = [
        ("", "all()"),
        (" all() ", "all()"),
        (" (all() )", "all()"),
        ("! (has( b)||! has(a ))", "!(has(b) || !has(a))"),
        (r#"! (a == "b"&&! c != "d")"#, r#"!(a == "b" && !c != "d")"#),
        (r#"a == "'""#, r#"a == "'""#),
        (r#"a == '"'"#, r#"a == '"'"#),
        (r#"a contains '"'"#, r#"a contains '"'"#),
        (r#"a contains "'""#, r#"a contains "'""#),
        (r#"a startswith '"'"#, r#"a starts with '"'"#),
        (r#"a endswith "'""#, r#"a ends with "'""#),
        (r#"a!='"'"#, r#"a != '"'"#),
        (r#"a in {"d"}"#, r#"a in {"d"}"#),
        (r#"a in {"a", "b"}"#, r#"a in {"a", "b"}"#),
        (r#"a in {"d", "a", "b"}"#, r#"a in {"a", "b", "d"}"#),
        (
            r#"a in {"z", "x", "y", "a"}"#,
            r#"a in {"a", "x", "y", "z"}"#,
        ),
        (
            r#"a in {"z", "z", "x", "y", "x", "a"}"#,
            r#"a in {"a", "x", "y", "z"}"#,
        ),
        (
            "a == 'x' && (b == 'y' && c == 'z')",
            r#"(a == "x" && (b == "y" && c == "z"))"#,
        ),
        ("a notin {}", "a not in {}"),
    ];
    for (input, expected) in cases {
        let canonical = sel(input).to_string();
        assert_eq!(canonical, expected, "{input:?}");
        assert_eq!(
            sel(&canonical).to_string(),
            canonical,
            "round trip of {input:?}"
        );
        assert_eq!(
            sel(&canonical),
            sel(input),
            "same selector after round trip"
        );
    }
}

#[test]
fn prefixing_renames_every_label_as_calicos_visitor_does() {
    let cases = [
        ("k == 'v'", r#"visited/k == "v""#),
        ("k != 'v'", r#"visited/k != "v""#),
        ("k contains 'v'", r#"visited/k contains "v""#),
        ("k starts with 'v'", r#"visited/k starts with "v""#),
        ("k ends with 'v'", r#"visited/k ends with "v""#),
        (
            "k == 'v' && x == 'y'",
            r#"(visited/k == "v" && visited/x == "y")"#,
        ),
        (
            "k == 'v' || has(x)",
            r#"(visited/k == "v" || has(visited/x))"#,
        ),
        ("!(k == 'v')", r#"!visited/k == "v""#),
        ("k in {'v'}", r#"visited/k in {"v"}"#),
        ("k not in {'v'}", r#"visited/k not in {"v"}"#),
        (
            "!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))",
            r#"!(!((visited/k == "v" && has(visited/t)) || all()) && visited/a in {"b", "c"})"#,
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(sel(input).prefixed("visited/").to_string(), expected);
    }
}

fn restriction(present: bool, absent: bool, values: Option<&[&str]>) -> Restriction {
    Restriction {
        present,
        absent,
        values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
    }
}

#[test]
fn label_restrictions_are_calicos() {
    type Case = (
        &'static str,
        &'static [(&'static str, bool, bool, Option<&'static [&'static str]>)],
    );
    let cases: &[Case] = &[
        ("", &[]),
        ("all()", &[]),
        ("global()", &[]),
        ("a == 'value'", &[("a", true, false, Some(&["value"]))]),
        ("has(a)", &[("a", true, false, None)]),
        (
            "a in {'v1','v2'}",
            &[("a", true, false, Some(&["v1", "v2"]))],
        ),
        ("a not in {'v1','v2'}", &[]),
        ("a contains 'foo'", &[("a", true, false, None)]),
        ("a ends with 'foo'", &[("a", true, false, None)]),
        ("a starts with 'foo'", &[("a", true, false, None)]),
        ("a != 'value'", &[]),
        (
            "a == 'v1' && a == 'v1'",
            &[("a", true, false, Some(&["v1"]))],
        ),
        ("a == 'v1' && a == 'v2'", &[("a", true, false, Some(&[]))]),
        ("a == 'v1' && has(a)", &[("a", true, false, Some(&["v1"]))]),
        (
            "a in {'v1','v2'} && a in {'v2','v3'} ",
            &[("a", true, false, Some(&["v2"]))],
        ),
        (
            "a in {'v1','v2', 'v3'} && a in {'v2','v3'} ",
            &[("a", true, false, Some(&["v2", "v3"]))],
        ),
        ("has(a) && a == 'v1'", &[("a", true, false, Some(&["v1"]))]),
        ("has(a) && !has(a)", &[("a", true, true, None)]),
        (
            "a == 'v1' && b == 'v2'",
            &[
                ("a", true, false, Some(&["v1"])),
                ("b", true, false, Some(&["v2"])),
            ],
        ),
        ("a == 'v1' && all()", &[("a", true, false, Some(&["v1"]))]),
        ("all() && a == 'v1'", &[("a", true, false, Some(&["v1"]))]),
        (
            "a == 'v1' || a == 'v2'",
            &[("a", true, false, Some(&["v1", "v2"]))],
        ),
        ("has(a) || a == 'v2'", &[("a", true, false, None)]),
        ("a=='v2' || has(a)", &[("a", true, false, None)]),
        ("a=='v2' || has(b)", &[]),
        ("a=='v2' || (has(b) && has(a))", &[("a", true, false, None)]),
        ("a == 'v1' || b == 'v2'", &[]),
        ("a == 'v1' || all()", &[]),
        ("all() || b == 'v2'", &[]),
        ("!(a == 'value')", &[]),
        ("!has(a)", &[("a", false, true, None)]),
        ("!!has(a)", &[("a", true, false, None)]),
    ];
    for (text, expected) in cases {
        let expected: BTreeMap<Label, Restriction> = expected
            .iter()
            .map(|(l, p, a, v)| (Label::new(*l), restriction(*p, *a, *v)))
            .collect();
        assert_eq!(sel(text).restrictions(), expected, "{text:?}");
        if !text.is_empty() {
            let wrapped = format!("all() && ({text})");
            assert_eq!(sel(&wrapped).restrictions(), expected, "{wrapped:?}");
        }
    }
}

/// A pod as Calico sees it, for the inheritance tests.
struct Endpoint {
    own: Labels,
    namespace: Option<&'static str>,
    workload: bool,
    service_account: Option<&'static str>,
    namespace_labels: Labels,
    service_account_labels: Labels,
}

impl LabelSource for Endpoint {
    fn own(&self, key: &str) -> Option<&str> {
        self.own.get(key).map(|v| v.as_str())
    }
    fn namespace(&self) -> Option<&str> {
        self.namespace
    }
    fn is_workload(&self) -> bool {
        self.workload
    }
    fn service_account(&self) -> Option<&str> {
        self.service_account
    }
    fn namespace_label(&self, key: &str) -> Option<&str> {
        self.namespace_labels.get(key).map(|v| v.as_str())
    }
    fn service_account_label(&self, key: &str) -> Option<&str> {
        self.service_account_labels.get(key).map(|v| v.as_str())
    }
    fn for_each_own(&self, f: &mut dyn FnMut(&str, &str)) {
        self.own.iter().for_each(|(k, v)| f(k, v));
    }
    fn for_each_namespace_label(&self, f: &mut dyn FnMut(&str, &str)) {
        self.namespace_labels.iter().for_each(|(k, v)| f(k, v));
    }
    fn for_each_service_account_label(&self, f: &mut dyn FnMut(&str, &str)) {
        self.service_account_labels
            .iter()
            .for_each(|(k, v)| f(k, v));
    }
}

fn pod() -> Endpoint {
    Endpoint {
        own: labels(&[("app", "web"), ("pcns.shadow", "mine")]),
        namespace: Some("prod"),
        workload: true,
        service_account: Some("builder"),
        namespace_labels: labels(&[
            ("team", "blue"),
            ("shadow", "namespace"),
            ("projectcalico.org/name", "prod"),
        ]),
        service_account_labels: labels(&[("role", "ci"), ("projectcalico.org/name", "builder")]),
    }
}

#[test]
fn pods_see_derived_and_inherited_labels() {
    let p = pod();
    for (text, expected) in [
        ("projectcalico.org/namespace == 'prod'", true),
        ("projectcalico.org/orchestrator == 'k8s'", true),
        ("projectcalico.org/serviceaccount == 'builder'", true),
        ("pcns.team == 'blue'", true),
        ("pcns.projectcalico.org/name == 'prod'", true),
        ("pcsa.role == 'ci'", true),
        ("pcsa.projectcalico.org/name == 'builder'", true),
        ("pcns.shadow == 'mine'", true),
        ("pcns.shadow == 'namespace'", false),
        ("team == 'blue'", false),
        ("has(pcns.missing)", false),
        ("pcns.missing != 'x'", true),
    ] {
        assert_eq!(sel(text).matches(&p), expected, "{text}");
    }
    let netset = Endpoint {
        own: labels(&[("kind", "external")]),
        namespace: None,
        workload: false,
        service_account: None,
        namespace_labels: Labels::new(),
        service_account_labels: Labels::new(),
    };
    assert!(!sel("has(projectcalico.org/namespace)").matches(&netset));
    assert!(!sel("projectcalico.org/orchestrator == 'k8s'").matches(&netset));
    assert!(
        sel("pcns.team != 'blue'").matches(&netset),
        "a negative namespace selector also matches things in no namespace"
    );
}

/// Calico's label-index tests, as the index's contract: every selector that matches an
/// object is among its candidates, for objects and selectors added in any order.
#[test]
fn the_index_finds_every_matching_selector() {
    let selectors = [
        "a == 'a1'",
        "a == 'b'",
        "c == 'd'",
        "has(a)",
        "!has(a)",
        "a != 'b'",
        "a in {'a1', 'b'} || c == 'd'",
        "pcns.team == 'blue'",
        "has(pcns.team) && app == 'web'",
        "projectcalico.org/namespace == 'prod'",
        "pcsa.role in {'ci'}",
        "pcns.shadow == 'mine'",
        "a == 'x' && a == 'y'",
        "all()",
    ];
    let mut index: SelectorIndex<usize> = SelectorIndex::new();
    for (i, text) in selectors.iter().enumerate() {
        index.insert(i, &sel(text));
    }
    let mut objects: Vec<Endpoint> = vec![pod()];
    for own in [
        labels(&[("a", "b"), ("c", "d")]),
        labels(&[("a", "a1")]),
        labels(&[("a", "a1"), ("b", "c")]),
        labels(&[("a", "a2")]),
        Labels::new(),
    ] {
        let mut p = pod();
        p.own = own;
        objects.push(p);
    }
    for object in &objects {
        let mut candidates = Vec::new();
        index.candidates(object, &mut candidates);
        for (i, text) in selectors.iter().enumerate() {
            if sel(text).matches(object) {
                assert!(
                    candidates.contains(&i),
                    "{text:?} matches {:?} but is not a candidate",
                    object.own
                );
            }
        }
        assert!(
            !candidates.contains(&12),
            "an unsatisfiable selector is never a candidate"
        );
    }
    // Removing every selector leaves nothing behind.
    for (i, text) in selectors.iter().enumerate() {
        index.remove(&i, &sel(text));
    }
    let mut candidates = Vec::new();
    index.candidates(&pod(), &mut candidates);
    assert!(candidates.is_empty());
    assert!(index.is_empty());
}

#[test]
fn the_index_finds_selectors_by_the_labels_they_read() {
    let mut index: SelectorIndex<usize> = SelectorIndex::new();
    index.insert(0, &sel("a == 'x'"));
    index.insert(1, &sel("!has(b) && pcns.team == 'blue'"));
    index.insert(2, &sel("c != 'y'"));
    let found = |f: &dyn Fn(&mut Vec<usize>)| {
        let mut out = Vec::new();
        f(&mut out);
        out.sort();
        out
    };
    assert_eq!(found(&|o| index.mentioning_own("a", o)), [0]);
    assert_eq!(found(&|o| index.mentioning_own("b", o)), [1]);
    assert_eq!(found(&|o| index.mentioning_own("pcns.team", o)), [1]);
    assert_eq!(found(&|o| index.mentioning_namespace_label("team", o)), [1]);
    assert_eq!(found(&|o| index.mentioning_own("c", o)), [2]);
    assert!(found(&|o| index.mentioning_own("d", o)).is_empty());
}

#[test]
fn kubernetes_selectors_become_expressions() {
    let values = |v: &[&str]| -> Vec<String> { v.iter().map(|s| s.to_string()).collect() };
    let in_values = values(&["prod", "staging"]);
    let not_in = values(&["b", "a"]);
    let none: Vec<String> = Vec::new();
    let s = Selector::kubernetes(
        [("role", "db"), ("app", "x")],
        [
            ("env", "In", in_values.as_slice()),
            ("x", "NotIn", not_in.as_slice()),
            ("f", "Exists", none.as_slice()),
            ("g", "DoesNotExist", none.as_slice()),
        ],
    )
    .unwrap();
    assert!(s.matches(&labels(&[
        ("role", "db"),
        ("app", "x"),
        ("env", "prod"),
        ("f", "")
    ])));
    assert!(!s.matches(&labels(&[("role", "db"), ("app", "x"), ("env", "prod")])));
    assert!(!s.matches(&labels(&[
        ("role", "db"),
        ("app", "x"),
        ("env", "prod"),
        ("f", ""),
        ("g", "1")
    ])));
    assert!(!s.matches(&labels(&[
        ("role", "db"),
        ("app", "x"),
        ("env", "prod"),
        ("f", ""),
        ("x", "a")
    ])));
    // The same requirements in another order are the same selector.
    let reordered = Selector::kubernetes(
        [("app", "x"), ("role", "db")],
        [
            ("g", "DoesNotExist", none.as_slice()),
            ("f", "Exists", none.as_slice()),
            ("x", "NotIn", not_in.as_slice()),
            ("env", "In", in_values.as_slice()),
        ],
    )
    .unwrap();
    assert_eq!(s, reordered);
    assert_eq!(Selector::kubernetes([], []).unwrap(), Selector::all());
    assert!(Selector::match_labels([]).is_all());
    for (op, values, index) in [
        ("Equals", none.clone(), 0),
        ("In", none.clone(), 0),
        ("Exists", in_values.clone(), 0),
    ] {
        let err = Selector::kubernetes([], [("a", op, values.as_slice())]).unwrap_err();
        assert_eq!(err.0, index);
    }
    assert_eq!(
        Selector::kubernetes([], [("", "Exists", none.as_slice())])
            .unwrap_err()
            .1,
        KubernetesSelectorError::EmptyKey
    );
}

#[test]
fn rewrites_for_namespace_selectors() {
    let s = sel("all()").prefixed("pcns.");
    assert!(s.is_all(), "all() has no labels to prefix");
    let s = sel("team == 'a' || all()")
        .prefixed("pcns.")
        .replace_all(Expr::has(NAMESPACE_LABEL));
    assert_eq!(
        s.to_string(),
        r#"(pcns.team == "a" || has(projectcalico.org/namespace))"#
    );
    let g = sel("global()").replace_global(Expr::negation(Expr::has(NAMESPACE_LABEL)));
    assert_eq!(g.to_string(), "!has(projectcalico.org/namespace)");
    assert!(sel("a == 'b' && global()").mentions_global());
    assert!(sel("projectcalico.org/orchestrator == 'k8s' && a == 'b'").only_pods());
    assert!(!sel("a == 'b'").only_pods());
}

#[test]
fn errors_name_the_position() {
    let err = Selector::parse("app == 'web' && tier = 'db'").unwrap_err();
    assert_eq!(err.position, 21);
    assert!(err.to_string().starts_with("at position 21: "), "{err}");
    let err = Selector::parse("app == web").unwrap_err();
    assert_eq!(err.position, 7);
}
