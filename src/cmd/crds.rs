use std::io::Write;
use std::process::ExitCode;

use palisade::model::calico::ApiGroup;

use super::EXIT_KERNEL_FAILURE;
use crate::cli::CrdGroupArg;

pub fn crds(group: CrdGroupArg) -> ExitCode {
    let group = match group {
        CrdGroupArg::V3 => ApiGroup::V3,
        CrdGroupArg::V1 => ApiGroup::CrdV1,
    };
    let text = match palisade::k8s::crds::calico_crds_yaml(group) {
        Ok(text) => text,
        Err(error) => {
            tracing::error!(%error, "cannot write the CRDs as YAML");
            return ExitCode::from(EXIT_KERNEL_FAILURE);
        }
    };
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "cannot write to stdout");
            ExitCode::from(EXIT_KERNEL_FAILURE)
        }
    }
}
