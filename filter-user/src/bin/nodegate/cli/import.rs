//! `nodegate import`: a rule file from the cloud's own policy, on stdout.

use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use anyhow::Context;
use filter_user::{
    import::{
        aws::{self, JsonFile, Resolution},
        azure, Imported,
    },
    policy::Mode,
};

use super::output::Output;

/// Write a rule file with the same meaning as the cloud's policy, or refuse naming what
/// cannot be imported exactly (never a silent widening or narrowing).
///
/// The file goes to stdout: check it with `nodegate import … | nodegate check -`. It starts
/// in monitor mode (`--mode enforce` to change that), names where every rule and set came
/// from, and says what to review. Exit 0 written, 1 refused or unreadable.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// The ingress permissions of security groups, from `aws ec2 describe-security-groups`.
    AwsSecurityGroups {
        /// The JSON `aws ec2 describe-security-groups` printed.
        file: PathBuf,
        /// Only this group of the file (repeatable; default: every group, their union).
        #[arg(long = "group", value_name = "SG")]
        groups: Vec<String>,
        #[command(flatten)]
        resolve: AwsResolve,
        #[command(flatten)]
        mode: ModeArg,
    },
    /// The EKS control-plane minimums (tcp 443, 10250) from `aws eks describe-cluster`.
    EksCluster {
        /// The JSON `aws eks describe-cluster` printed.
        file: PathBuf,
        /// Also allow TCP and UDP 1025-65535 from the control plane, as EKS recommends.
        #[arg(long)]
        high_ports: bool,
        #[command(flatten)]
        resolve: AwsResolve,
        #[command(flatten)]
        mode: ModeArg,
    },
    /// API server authorized IP ranges from `az aks show`.
    AksCluster {
        /// The JSON `az aks show` printed.
        file: PathBuf,
        /// The cluster's outbound public IP (what AKS's special 0.0.0.0/32 authorizes;
        /// repeatable).
        #[arg(long = "outbound-ip", value_name = "IP")]
        outbound_ips: Vec<String>,
        /// `az network vnet subnet list` JSON: the API server subnet (VNet integration).
        #[arg(long, value_name = "FILE")]
        subnets: Option<PathBuf>,
        #[command(flatten)]
        mode: ModeArg,
    },
    /// Inbound rules of a network security group, from `az network nsg show` (or
    /// `az network nsg rule list`).
    AzureNsg {
        /// The JSON `az network nsg show` printed.
        file: PathBuf,
        /// A service tag's addresses: NAME=CIDR,… (repeatable), e.g.
        /// `--tag VirtualNetwork=10.224.0.0/12`.
        #[arg(long = "tag", value_name = "NAME=CIDR,…", value_parser = id_list)]
        tags: Vec<(String, Vec<String>)>,
        /// The node's address (repeatable): decides whether rules with a destination prefix
        /// apply to it.
        #[arg(long = "node-address", value_name = "IP")]
        node_addresses: Vec<IpAddr>,
        #[command(flatten)]
        mode: ModeArg,
    },
}

/// How AWS sources that are not CIDRs resolve.
#[derive(clap::Args)]
struct AwsResolve {
    /// A security group's or prefix list's addresses: ID=CIDR|SUBNET-ID,… (repeatable).
    #[arg(long = "group-cidrs", value_name = "ID=CIDR,…", value_parser = id_list)]
    group_cidrs: Vec<(String, Vec<String>)>,
    /// `aws ec2 describe-network-interfaces` JSON: a security group source is the addresses
    /// of the ENIs carrying it.
    #[arg(long, value_name = "FILE")]
    enis: Option<PathBuf>,
    /// `aws ec2 describe-subnets` JSON: subnet ids to CIDR blocks.
    #[arg(long, value_name = "FILE")]
    subnets: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ModeArg {
    /// The written file's mode.
    #[arg(long, value_enum, default_value_t = ImportMode::Monitor)]
    mode: ImportMode,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ImportMode {
    /// Count would-drops, drop nothing (review first).
    Monitor,
    /// Drop what the rules do not allow.
    Enforce,
}

impl ModeArg {
    fn mode(&self) -> Mode {
        match self.mode {
            ImportMode::Monitor => Mode::Monitor,
            ImportMode::Enforce => Mode::Enforce,
        }
    }
}

/// `ID=A,B,…`.
fn id_list(text: &str) -> Result<(String, Vec<String>), String> {
    let (id, values) = text
        .split_once('=')
        .ok_or_else(|| format!("expected ID=VALUE,…, got {text:?}"))?;
    let values: Vec<String> = values
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect();
    if id.trim().is_empty() || values.is_empty() {
        return Err(format!("expected ID=VALUE,…, got {text:?}"));
    }
    Ok((id.trim().to_owned(), values))
}

fn read(path: &PathBuf) -> anyhow::Result<JsonFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(JsonFile {
        name: path.display().to_string(),
        text,
    })
}

fn resolution(r: &AwsResolve) -> anyhow::Result<Resolution> {
    Ok(Resolution {
        group_cidrs: r.group_cidrs.clone(),
        enis: r.enis.as_ref().map(read).transpose()?,
        subnets: r.subnets.as_ref().map(read).transpose()?,
    })
}

pub fn run(args: Args, out: Output) -> anyhow::Result<ExitCode> {
    super::text_only(out, "import", "it writes a rule file")?;
    let imported: Imported = match &args.what {
        What::AwsSecurityGroups {
            file,
            groups,
            resolve,
            mode,
        } => aws::security_groups(
            &read(file)?,
            &aws::SecurityGroupOptions {
                mode: mode.mode(),
                groups: groups.clone(),
                resolution: resolution(resolve)?,
            },
        )?,
        What::EksCluster {
            file,
            high_ports,
            resolve,
            mode,
        } => aws::eks_cluster(
            &read(file)?,
            &aws::EksOptions {
                mode: mode.mode(),
                high_ports: *high_ports,
                resolution: resolution(resolve)?,
            },
        )?,
        What::AksCluster {
            file,
            outbound_ips,
            subnets,
            mode,
        } => azure::aks_cluster(
            &read(file)?,
            &azure::AksOptions {
                mode: mode.mode(),
                outbound_ips: outbound_ips.clone(),
                subnets: subnets.as_ref().map(read).transpose()?,
            },
        )?,
        What::AzureNsg {
            file,
            tags,
            node_addresses,
            mode,
        } => azure::network_security_group(
            &read(file)?,
            &azure::NsgOptions {
                mode: mode.mode(),
                tags: tags.clone(),
                node_addresses: node_addresses.clone(),
            },
        )?,
    };
    print!("{}", imported.to_yaml());
    Ok(ExitCode::SUCCESS)
}
