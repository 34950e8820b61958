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

#[inline(always)]
fn count(ctx: &TcContext) -> Result<(), i64> {
    let proto = u16::from_be(ctx.load::<u16>(12)?);
    let l4 = match proto {
        ETH_P_IP => {
            let vihl: u8 = ctx.load(ETH_HLEN)?;
            if ctx.load::<u8>(ETH_HLEN + 9)? != IPPROTO_TCP {
                return Ok(());
            }
            ETH_HLEN + ((vihl & 0x0f) as usize) * 4
        }
        ETH_P_IPV6 => {
            if ctx.load::<u8>(ETH_HLEN + 6)? != IPPROTO_TCP {
                return Ok(());
            }
            ETH_HLEN + 40
        }
        _ => return Ok(()),
    };
    let dport = u16::from_be(ctx.load::<u16>(l4 + 2)?);
    if let Some(slot) = port_slot(dport)
        && let Some(c) = slot_counters(slot)
    {
        c.nic_rx_pkts += 1;
        c.nic_rx_bytes += ctx.len() as u64;
    }
    Ok(())
}
