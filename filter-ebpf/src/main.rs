#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};
use filter_common::{Counter, Reason, MAX_IFACES, STAT_SLOTS};

#[map(name = "NG_STATS")]
static STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_IFACES * STAT_SLOTS, 0);

#[xdp]
pub fn nodegate(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    if let Some(c) = STATS.get_ptr_mut(Reason::DefaultPass as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
    }
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // A reachable panic must fail verification rather than hide: loop forever.
    loop {}
}
