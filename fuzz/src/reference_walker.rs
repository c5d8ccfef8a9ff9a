//! A plain reference walker for guest paging without nested paging, written straight from the SDM
//! tables (Vol. 3A 4.3–4.7) with a table of levels per mode, to cross-check `hvkit_paging::Walker`.

use hvkit_paging::{HostArena, HostPhysAddr, PhysMemory};

/// The outcome, in plain numbers.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Outcome {
    /// Translated: guest-physical and host-physical address, page size in bytes, global.
    Ok { gpa: u64, hpa: u64, size: u64, global: bool },
    /// #PF with this error code.
    PageFault(u64),
    /// #GP (non-canonical).
    NonCanonical,
    /// PAE PDPTE with reserved bits.
    BadPdpte(u8),
    /// Memory outside the arena.
    Memory,
    /// EPT violation: qualification bits and guest-physical address.
    EptViolation { qual: u64, gpa: u64 },
    /// EPT misconfiguration at this guest-physical address.
    EptMisconfig(u64),
    /// Nested page fault: EXITINFO1 and the guest-physical address.
    Npf { info: u64, gpa: u64 },
}

/// AMD nested paging in use: nCR3 root, depth, host EFER.NXE.
#[derive(Debug, Clone, Copy)]
pub struct NptRef {
    pub root: u64,
    pub levels: u32,
    pub nxe: bool,
}

/// One nested translation (APM 15.25.5/15.25.6): user access; guest-table accesses are writes.
/// Faults are `Outcome::Npf { info, gpa }`.
fn npt(mem: &HostArena, n: &NptRef, gpa: u64, kind: u8, fin: bool) -> Result<(u64, u64), Outcome> {
    let kind = if fin { kind } else { 1 };
    let mut info = 4u64 | if kind == 1 { 2 } else { 0 } | if kind == 2 { 16 } else { 0 };
    info |= if fin { 1 << 32 } else { 1 << 33 };
    let fault = |extra: u64| Outcome::Npf { info: info | extra, gpa };
    if gpa >> (12 + 9 * n.levels) != 0 {
        return Err(fault(0));
    }
    let mut table = n.root & bits(51, 12);
    let (mut u, mut w, mut x) = (true, true, true);
    for level in (1..=n.levels).rev() {
        let shift = 12 + 9 * (level - 1);
        let Ok(e) = mem.read_u64(HostPhysAddr::new_truncate(table + ((gpa >> shift) & 511) * 8)) else {
            return Err(Outcome::Memory);
        };
        if e & 1 == 0 {
            return Err(fault(0));
        }
        let large = (level == 2 || level == 3) && bit(e, 7);
        let mut rsvd = 0;
        if !n.nxe {
            rsvd |= 1 << 63;
        }
        if level >= 4 {
            rsvd |= 1 << 7;
        }
        if large {
            rsvd |= bits(shift - 1, 13);
        }
        if e & rsvd != 0 {
            return Err(fault(1 | 8));
        }
        u &= bit(e, 2);
        w &= bit(e, 1);
        x &= !bit(e, 63);
        if level == 1 || large {
            if !u || (kind == 1 && !w) || (kind == 2 && n.nxe && !x) {
                return Err(fault(1));
            }
            return Ok(((e & bits(51, shift)) | (gpa & ((1 << shift) - 1)), 1 << shift));
        }
        table = e & bits(51, 12);
    }
    unreachable!("level 1 always returns")
}

/// The nested paging in use.
#[derive(Debug, Clone, Copy)]
pub enum NestedRef {
    /// Intel EPT.
    Ept(EptRef),
    /// AMD NPT.
    Npt(NptRef),
}

/// The EPT in use, if any.
#[derive(Debug, Clone, Copy)]
pub struct EptRef {
    pub eptp: u64,
    pub mbec: bool,
    pub advanced: bool,
}

/// One EPT translation (SDM Vol. 3C 29.3.2, 29.3.3), kind 0 read, 1 write, 2 fetch.
/// `rights` = (user, writable, nx) of the linear address for final accesses.
#[allow(clippy::too_many_arguments)]
fn ept(
    mem: &HostArena,
    e: &EptRef,
    gpa: u64,
    kind: u8,
    fin: bool,
    pdpte: bool,
    rights: (bool, bool, bool),
) -> Result<(u64, u64), Outcome> {
    let levels = (((e.eptp >> 3) & 7) + 1).clamp(4, 5) as u32;
    let ad = bit(e.eptp, 6);
    let kind = if !fin && ad && !pdpte { 1 } else { kind };
    let mut and = 0x407u64;
    let mut hit = None;
    if gpa >> (12 + 9 * levels) == 0 {
        let mut table = e.eptp & bits(51, 12);
        for level in (1..=levels).rev() {
            let shift = 12 + 9 * (level - 1);
            let Ok(x) = mem.read_u64(HostPhysAddr::new_truncate(table + ((gpa >> shift) & 511) * 8)) else {
                return Err(Outcome::Memory);
            };
            if x & 7 == 0 && !(e.mbec && bit(x, 10)) {
                and = 0;
                break;
            }
            if x & 3 == 2 || (level >= 4 && bit(x, 7)) {
                return Err(Outcome::EptMisconfig(gpa));
            }
            and &= x & 0x407;
            if level == 1 || (level <= 3 && bit(x, 7)) {
                let mt = (x >> 3) & 7;
                if mt == 2 || mt == 3 || mt == 7 || (level > 1 && x & bits(shift - 1, 12) != 0) {
                    return Err(Outcome::EptMisconfig(gpa));
                }
                hit = Some(((x & bits(51, shift)) | (gpa & ((1 << shift) - 1)), 1u64 << shift));
                break;
            }
            table = x & bits(51, 12);
        }
    } else {
        and = 0;
    }
    let ok = hit.is_some()
        && match kind {
            0 => bit(and, 0),
            1 => bit(and, 1),
            _ => {
                if e.mbec && rights.0 {
                    bit(and, 10)
                } else {
                    bit(and, 2)
                }
            }
        };
    if ok {
        return Ok(hit.unwrap_or_default());
    }
    let mut q = 1u64 << 7 | 1 << kind;
    q |= (and & 7) << 3;
    if e.mbec && bit(and, 10) {
        q |= 1 << 6;
    }
    if fin {
        q |= 1 << 8;
        if e.advanced {
            q |= u64::from(rights.0) << 9 | u64::from(rights.1) << 10 | u64::from(rights.2) << 11;
        }
    }
    Err(Outcome::EptViolation { qual: q, gpa })
}

/// Guest registers.
#[derive(Debug, Clone, Copy)]
pub struct Regs {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub pkru: u32,
    pub maxphy: u8,
    pub gbpages: bool,
}

fn bits(hi: u32, lo: u32) -> u64 {
    if hi < lo {
        return 0;
    }
    ((u64::MAX >> (63 - hi)) >> lo) << lo
}

fn bit(v: u64, n: u32) -> bool {
    (v >> n) & 1 == 1
}

/// kind: 0 read, 1 write, 2 fetch.
pub fn walk(
    mem: &HostArena,
    nested: Option<&NestedRef>,
    r: &Regs,
    va: u64,
    kind: u8,
    user: bool,
    implicit: bool,
    ac: bool,
) -> Outcome {
    // Guest-physical → host-physical: identity without EPT.
    let tr = |gpa: u64, kind: u8, fin: bool, pdpte: bool, rights| match nested {
        None => Ok((gpa, 1u64 << 30)),
        Some(NestedRef::Ept(e)) => ept(mem, e, gpa, kind, fin, pdpte, rights),
        Some(NestedRef::Npt(n)) => npt(mem, n, gpa, kind, fin),
    };
    let finish = |gpa: u64, size: u64, global: bool, rights| match tr(gpa, kind, true, false, rights) {
        Ok((hpa, nsize)) => Outcome::Ok { gpa, hpa, size: size.min(nsize), global },
        Err(o) => o,
    };
    if !bit(r.cr0, 31) {
        return finish(va & 0xffff_ffff, 4096, false, (false, true, false));
    }
    let pae = bit(r.cr4, 5);
    let long = pae && bit(r.efer, 10);
    let la57 = long && bit(r.cr4, 12);
    let nxe = pae && bit(r.efer, 11);
    let m = u32::from(r.maxphy).clamp(32, 52);
    let cpl3 = user && !implicit;
    let (smep, smap, pke, pse, pge, wp) =
        (bit(r.cr4, 20), bit(r.cr4, 21), bit(r.cr4, 22), bit(r.cr4, 4), bit(r.cr4, 7), bit(r.cr0, 16));
    let mut code = 0u64;
    if kind == 1 {
        code |= 2;
    }
    if cpl3 {
        code |= 4;
    }
    if kind == 2 && (smep || (pae && bit(r.efer, 11))) {
        code |= 16;
    }
    // A guest table read: through EPT (not final), then memory.
    let read = |addr: u64, wide: bool, pdpte: bool| -> Result<u64, Outcome> {
        let (h, _) = tr(addr, 0, false, pdpte, (false, false, false))?;
        let a = HostPhysAddr::new_truncate(h);
        let v = if wide { mem.read_u64(a).ok() } else { mem.read_u32(a).ok().map(u64::from) };
        v.ok_or(Outcome::Memory)
    };

    // (index shift, index width, may be a leaf?, page size) per level, top first.
    let mut levels: Vec<(u32, u32, bool)> = Vec::new();
    let wide = pae;
    let mut table;
    if long {
        let top = if la57 { 48 } else { 39 };
        let sign = (va as i64) >> (top + 8);
        if sign != 0 && sign != -1 {
            return Outcome::NonCanonical;
        }
        if la57 {
            levels.push((48, 9, false));
        }
        levels.extend([(39, 9, false), (30, 9, true), (21, 9, true), (12, 9, true)]);
        table = r.cr3 & bits(m - 1, 12);
    } else if pae {
        let idx = (va >> 30) & 3;
        let pdpte = match read((r.cr3 & bits(31, 5)) + idx * 8, true, true) {
            Ok(v) => v,
            Err(o) => return o,
        };
        if pdpte & 1 == 0 {
            return Outcome::PageFault(code);
        }
        if pdpte & (bits(2, 1) | bits(8, 5) | (1 << 63) | bits(51, m)) != 0 {
            return Outcome::BadPdpte(idx as u8);
        }
        table = pdpte & bits(m - 1, 12);
        levels.extend([(21, 9, true), (12, 9, true)]);
    } else {
        table = r.cr3 & bits(31, 12);
        levels.extend([(22, 10, pse), (12, 10, true)]);
    }

    let (mut u, mut w, mut x) = (true, true, true);
    let n = levels.len();
    for (k, &(shift, width, can_be_large)) in levels.iter().enumerate() {
        let last = k + 1 == n;
        let idx = (va >> shift) & ((1 << width) - 1);
        let e = match read(table + idx * if wide { 8 } else { 4 }, wide, false) {
            Ok(v) => v,
            Err(o) => return o,
        };
        if e & 1 == 0 {
            return Outcome::PageFault(code);
        }
        let ps = bit(e, 7);
        let is_pdpt_level = long && shift == 30;
        let large = !last && ps && can_be_large && (!is_pdpt_level || r.gbpages);
        let mut rsvd = 0u64;
        if wide {
            rsvd |= bits(51, m);
            if !long {
                rsvd |= bits(62, 52);
            }
            if !nxe {
                rsvd |= 1 << 63;
            }
            if long && shift >= 39 {
                rsvd |= 1 << 7;
            }
            if is_pdpt_level && ps && !r.gbpages {
                rsvd |= 1 << 7;
            }
            if large {
                rsvd |= bits(shift - 1, 13);
            }
        } else if large {
            rsvd |= 1 << 21;
            let top = m.min(40);
            if top < 40 {
                rsvd |= bits(20, 13 + top - 32);
            }
        }
        if e & rsvd != 0 {
            return Outcome::PageFault(code | 1 | 8);
        }
        u &= bit(e, 2);
        w &= bit(e, 1);
        if wide && bit(e, 63) {
            x = false;
        }
        if last || large {
            let size = 1u64 << shift;
            let base = if wide {
                e & bits(m - 1, shift)
            } else if large {
                (e & bits(31, 22)) | ((e & bits(20, 13)) << 19)
            } else {
                e & bits(31, 12)
            };
            let gpa = base | (va & (size - 1));
            let nx = nxe && !x;
            let smap_hit = u && smap && (implicit || !ac);
            let ok = match kind {
                0 => {
                    if cpl3 {
                        u
                    } else {
                        !smap_hit
                    }
                }
                1 => {
                    if cpl3 {
                        u && w
                    } else {
                        !smap_hit && (!wp || w)
                    }
                }
                _ => {
                    if cpl3 {
                        u && !nx
                    } else {
                        !(u && smep) && !nx
                    }
                }
            };
            if !ok {
                return Outcome::PageFault(code | 1);
            }
            if long && pke && u && kind != 2 {
                let key = (e >> 59) & 15;
                let ad = bit(u64::from(r.pkru), (2 * key) as u32);
                let wd = bit(u64::from(r.pkru), (2 * key + 1) as u32);
                if ad || (kind == 1 && wd && (cpl3 || wp)) {
                    return Outcome::PageFault(code | 1 | 32);
                }
            }
            let gpa = if wide { gpa } else { gpa & bits(39, 0) } & bits(51, 0);
            return finish(gpa, size, pge && bit(e, 8), (u, w, nx));
        }
        table = e & if wide { bits(m - 1, 12) } else { bits(31, 12) };
    }
    unreachable!("the last level always returns")
}
