//! Command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "palisade", version, about = "Kubernetes NetworkPolicy enforcement with ipset and iptables")]
pub struct Cli {
    /// Log format on stderr. The level comes from RUST_LOG (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FamilyArg {
    Ipv4,
    Ipv6,
    Both,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the ipsets and iptables rules a node must hold, without touching the kernel.
    Render {
        /// Manifest files or directories (YAML or JSON).
        #[arg(long, required = true, num_args = 1..)]
        manifests: Vec<PathBuf>,
        /// The node whose pods to program (matches the pods' spec.nodeName).
        #[arg(long)]
        node: String,
        #[arg(long, value_enum, default_value_t = FamilyArg::Both)]
        family: FamilyArg,
    },
}
