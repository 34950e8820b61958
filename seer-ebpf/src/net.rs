//! tc ingress (TCX): TCP packets and bytes per destination port of a watched service.
use aya_ebpf::{macros::classifier, programs::TcContext};

use crate::maps::{port_slot, slot_counters};

/// Let the next program / the stack decide: this program only counts.
const TCX_NEXT: i32 = -1;
const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPPROTO_TCP: u8 = 6;

#[classifier]
pub fn seer_tc_ingress(ctx: TcContext) -> i32 {
    let _ = count(&ctx);
    TCX_NEXT
}

/// Direct packet access (no helper call per field): a `T` at `off`, if the linear data has it.
#[inline(always)]
fn at<T: Copy>(ctx: &TcContext, off: usize) -> Option<T> {
    let start = ctx.data();
    if start + off + core::mem::size_of::<T>() > ctx.data_end() {
        return None;
    }
    // SAFETY: bounds checked against data_end just above (the verifier checks it too).
    Some(unsafe { core::ptr::read_unaligned((start + off) as *const T) })
}

#[inline(always)]
fn count(ctx: &TcContext) -> Option<()> {
    let proto = u16::from_be(at::<u16>(ctx, 12)?);
    let l4 = match proto {
        ETH_P_IP => {
            let vihl: u8 = at(ctx, ETH_HLEN)?;
            if at::<u8>(ctx, ETH_HLEN + 9)? != IPPROTO_TCP {
                return None;
            }
            // IHL is 4 bits: at most 60 bytes of IP header.
            ETH_HLEN + ((vihl & 0x0f) as usize) * 4
        }
        ETH_P_IPV6 => {
            if at::<u8>(ctx, ETH_HLEN + 6)? != IPPROTO_TCP {
                return None;
            }
            ETH_HLEN + 40
        }
        _ => return None,
    };
    let dport = u16::from_be(at::<u16>(ctx, l4 + 2)?);
    if let Some(slot) = port_slot(dport)
        && let Some(c) = slot_counters(slot)
    {
        c.nic_rx_pkts += 1;
        c.nic_rx_bytes += ctx.len() as u64;
    }
    Some(())
}
