//! Low-memory hosts. A server with less RAM than `swap_below_mib` (2 GiB by
//! default) and no swap at all gets builds OOM-killed (npm, cargo and pip are
//! hungry): the agent says so in an event, and where the operator set
//! `swap_file_mib` it makes a swap file of that size through the privileged
//! helper before the first build, once per agent run.

use crate::context::Context;
use crate::store::event;

/// RAM and swap of the host, in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub ram_mib: u64,
    pub swap_mib: u64,
}

/// `MemTotal` and `SwapTotal` of a `/proc/meminfo` text.
pub fn parse_meminfo(text: &str) -> Option<Memory> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|line| line.starts_with(name))?;
        let kib: u64 = line[name.len()..]
            .trim_start_matches(':')
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kib / 1024)
    };
    Some(Memory {
        ram_mib: field("MemTotal")?,
        swap_mib: field("SwapTotal")?,
    })
}

/// Whether builds on this host need a swap file: little RAM and no swap.
pub fn needs_swap(memory: Memory, below_mib: u64) -> bool {
    memory.ram_mib < below_mib && memory.swap_mib == 0
}

/// Checks the host once per agent run (every caller waits for the first check),
/// before builds: warns, or makes the swap file where that is enabled.
pub async fn ensure(context: &Context) {
    context
        .memory_checked
        .get_or_init(|| async { check(context).await })
        .await;
}

async fn check(context: &Context) {
    let Some(memory) = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .as_deref()
        .and_then(parse_meminfo)
    else {
        return;
    };
    let below = context.config.swap_below_mib;
    if !needs_swap(memory, below) {
        return;
    }
    let Memory { ram_mib, .. } = memory;
    let recorded = match context.config.swap_file_mib {
        None => {
            tracing::warn!(ram_mib, "low memory and no swap; builds may be killed");
            event(
                "node.low_memory",
                "warning",
                format!(
                    "this server has {ram_mib} MiB of RAM and no swap: builds may run out of \
                     memory; set NANOSCALE_SWAP_FILE_MIB (e.g. 2048) to let NanoScale make a \
                     swap file"
                ),
            )
        }
        Some(size_mib) => {
            let made = match crate::helper::Helper::for_agent(&context.config) {
                Ok(helper) => {
                    helper
                        .run(&crate::helper::Operation::CreateSwap { size_mib })
                        .await
                }
                Err(error) => Err(error),
            };
            match made {
                Ok(crate::helper::Answer::Swap { path, .. }) => {
                    tracing::info!(size_mib, path = %path.display(), "swap file on");
                    event(
                        "node.swap_created",
                        "info",
                        format!(
                            "this server has {ram_mib} MiB of RAM and had no swap: made a \
                             {size_mib} MiB swap file ({}) before building",
                            path.display()
                        ),
                    )
                }
                Ok(other) => {
                    tracing::warn!(?other, "unexpected answer to create_swap");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "could not make the swap file");
                    event(
                        "node.swap_failed",
                        "error",
                        format!(
                            "this server has {ram_mib} MiB of RAM and no swap, and the \
                             {size_mib} MiB swap file could not be made: {error}"
                        ),
                    )
                }
            }
        }
    };
    if context.store.record_event(recorded).await.is_ok() {
        context.report_now.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = "MemTotal:        1009008 kB\nMemFree:          123456 kB\n\
                         SwapTotal:             0 kB\nSwapFree:              0 kB\n";

    #[test]
    fn reads_ram_and_swap_and_decides() {
        let small = parse_meminfo(SMALL).expect("parses");
        assert_eq!(
            small,
            Memory {
                ram_mib: 985,
                swap_mib: 0
            }
        );
        assert!(needs_swap(small, 2048));
        assert!(!needs_swap(small, 512), "enough RAM for the threshold");
        let swapped = Memory {
            swap_mib: 1024,
            ..small
        };
        assert!(!needs_swap(swapped, 2048), "some swap already");
        let big = parse_meminfo("MemTotal: 24683584 kB\nSwapTotal: 0 kB\n").expect("parses");
        assert!(!needs_swap(big, 2048));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None, "no swap line");
        assert_eq!(parse_meminfo("garbage"), None);
    }
}
