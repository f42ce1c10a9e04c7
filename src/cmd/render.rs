use std::process::ExitCode;

use palisade::compiler;
use palisade::model::Family;
use palisade::render;

use crate::cli::{FamilyArg, ManifestArgs, MarkArgs};

pub fn render(input: &ManifestArgs, family: FamilyArg, mark_args: &MarkArgs) -> ExitCode {
    let (manifests, config) = match (
        super::load(&input.manifests),
        super::compiler_config(mark_args),
    ) {
        (Ok(m), Ok(config)) => (m, config),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let state = compiler::compile(&manifests.into_index(), &input.node, config);
    let families: &[Family] = match family {
        FamilyArg::Ipv4 => &[Family::V4],
        FamilyArg::Ipv6 => &[Family::V6],
        FamilyArg::Both => &Family::ALL,
    };
    let mut out = String::new();
    for family in families {
        let family_state = state.family(*family);
        // IPv6 text only where this node has IPv6 pods, unless asked for explicitly.
        if family_state.chains.is_empty() && families.len() > 1 {
            continue;
        }
        out.push_str(&render::full_text(family_state, *family));
    }
    print!("{out}");
    ExitCode::SUCCESS
}
