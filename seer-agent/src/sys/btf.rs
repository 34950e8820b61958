//! Kernel struct offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! aya emits no CO-RE relocations, so the eBPF programs read kernel structs at offsets the agent
//! resolves here at load time and passes in as the global `OFFSETS`. This is a small reader of
//! the BTF format (types and strings sections): enough to walk struct/union members, including
//! anonymous ones, through typedefs and qualifiers.
use std::{collections::HashMap, path::Path};

use seer_common::KernelOffsets;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "cannot read kernel BTF at {path}: {source}. seer needs a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 5.4; Debian since 5.10)"
    )]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid BTF: {what}")]
    Malformed { path: String, what: String },
    #[error("kernel BTF has no struct `{0}`")]
    NoStruct(String),
    #[error("kernel BTF: struct `{strukt}` has no field `{field}` (looked up `{path}`)")]
    NoField {
        strukt: String,
        field: String,
        path: String,
    },
    #[error("kernel BTF: `{path}` is {got} bytes, seer reads {want}")]
    Size { path: String, got: u32, want: u32 },
    #[error("kernel BTF: `{0}` is a bitfield; seer cannot read it")]
    Bitfield(String),
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Debug)]
struct Member {
    name: u32,
    ty: u32,
    bit_offset: u32,
    bitfield_size: u32,
}

#[derive(Clone, Debug)]
struct Type {
    name: u32,
    kind: u32,
    /// size for INT/STRUCT/UNION/ENUM, referenced type for PTR/TYPEDEF/qualifiers
    size_or_type: u32,
    members: Vec<Member>,
    /// element type and count for ARRAY
    array: Option<(u32, u32)>,
}

/// Parsed BTF: types by id (id 0 is void) and the string section.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    structs: HashMap<String, u32>,
}

/// Where a field lives: byte offset from the start of the outer struct, and its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub offset: u32,
    pub size: u32,
}

fn rd32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl Btf {
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new("/sys/kernel/btf/vmlinux"))
    }

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&data).map_err(|what| BtfError::Malformed {
            path: path.display().to_string(),
            what,
        })
    }

    pub fn parse(data: &[u8]) -> Result<Self, String> {
        let magic = data.get(0..2).ok_or("file too short")?;
        if magic != [0x9f, 0xeb] {
            return Err(format!(
                "bad magic {magic:02x?} (expected 9f eb, little-endian BTF)"
            ));
        }
        let hdr_len = rd32(data, 4).ok_or("short header")? as usize;
        let type_off = rd32(data, 8).ok_or("short header")? as usize;
        let type_len = rd32(data, 12).ok_or("short header")? as usize;
        let str_off = rd32(data, 16).ok_or("short header")? as usize;
        let str_len = rd32(data, 20).ok_or("short header")? as usize;
        let tsec = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or("type section out of bounds")?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or("string section out of bounds")?
            .to_vec();
        let mut types = vec![Type {
            name: 0,
            kind: 0,
            size_or_type: 0,
            members: Vec::new(),
            array: None,
        }];
        let mut at = 0usize;
        let short = || "truncated type section".to_string();
        while at < tsec.len() {
            let name = rd32(tsec, at).ok_or_else(short)?;
            let info = rd32(tsec, at + 4).ok_or_else(short)?;
            let size_or_type = rd32(tsec, at + 8).ok_or_else(short)?;
            at += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kflag = info >> 31 == 1;
            let mut t = Type {
                name,
                kind,
                size_or_type,
                members: Vec::new(),
                array: None,
            };
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => at += 4,
                KIND_ARRAY => {
                    let elem = rd32(tsec, at).ok_or_else(short)?;
                    let n = rd32(tsec, at + 8).ok_or_else(short)?;
                    t.array = Some((elem, n));
                    at += 12;
                }
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let off = rd32(tsec, m + 8).ok_or_else(short)?;
                        let (bit_offset, bitfield_size) = if kflag {
                            (off & 0xff_ffff, off >> 24)
                        } else {
                            (off, 0)
                        };
                        t.members.push(Member {
                            name: rd32(tsec, m).ok_or_else(short)?,
                            ty: rd32(tsec, m + 4).ok_or_else(short)?,
                            bit_offset,
                            bitfield_size,
                        });
                    }
                    at += vlen * 12;
                }
                KIND_ENUM | KIND_FUNC_PROTO => at += vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => at += vlen * 12,
                0..=19 => {}
                k => return Err(format!("unknown BTF kind {k} at type {}", types.len())),
            }
            types.push(t);
        }
        let mut btf = Btf {
            types,
            strings,
            structs: HashMap::new(),
        };
        for (id, t) in btf.types.iter().enumerate() {
            if matches!(t.kind, KIND_STRUCT | KIND_UNION) && t.name != 0 {
                let n = btf.name(t.name).to_string();
                btf.structs.entry(n).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let s = self.strings.get(off as usize..).unwrap_or_default();
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Some(t),
            }
        }
        None
    }

    fn size_of(&self, id: u32) -> u32 {
        match self.resolve(id) {
            Some(t) if t.kind == KIND_PTR => 8,
            Some(t) if t.kind == KIND_ARRAY => {
                let (elem, n) = t.array.unwrap_or((0, 0));
                self.size_of(elem) * n
            }
            Some(t) => t.size_or_type,
            None => 0,
        }
    }

    /// Finds `name` among the members of struct/union `t`, descending into anonymous members.
    /// Returns the member's bit offset from the start of `t`.
    fn find_member(&self, t: &Type, name: &str) -> Option<(u32, Member)> {
        for m in &t.members {
            if m.name != 0 {
                if self.name(m.name) == name {
                    return Some((m.bit_offset, m.clone()));
                }
            } else if let Some(inner) = self.resolve(m.ty)
                && matches!(inner.kind, KIND_STRUCT | KIND_UNION)
                && let Some((off, found)) = self.find_member(inner, name)
            {
                return Some((m.bit_offset + off, found));
            }
        }
        None
    }

    /// Resolves `struct.field.field...` to a byte offset and size.
    pub fn field(&self, path: &str) -> Result<Field, BtfError> {
        let mut parts = path.split('.');
        let strukt = parts.next().unwrap_or_default();
        let id = *self
            .structs
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.into()))?;
        let mut t = self
            .resolve(id)
            .ok_or_else(|| BtfError::NoStruct(strukt.into()))?;
        let mut cur_name = strukt.to_string();
        let mut bits = 0u32;
        let mut last: Option<Member> = None;
        for part in parts {
            let (off, m) = self.find_member(t, part).ok_or_else(|| BtfError::NoField {
                strukt: cur_name.clone(),
                field: part.into(),
                path: path.into(),
            })?;
            bits += off;
            t = self.resolve(m.ty).ok_or_else(|| BtfError::NoField {
                strukt: cur_name.clone(),
                field: part.into(),
                path: path.into(),
            })?;
            cur_name = part.to_string();
            last = Some(m);
        }
        let m = last.ok_or_else(|| BtfError::NoField {
            strukt: strukt.into(),
            field: String::new(),
            path: path.into(),
        })?;
        if m.bitfield_size != 0 || !bits.is_multiple_of(8) {
            return Err(BtfError::Bitfield(path.into()));
        }
        Ok(Field {
            offset: bits / 8,
            size: self.size_of(m.ty),
        })
    }

    /// Whether `struct.field...` exists in this kernel (a feature test: e.g.
    /// `bpf_iter_link_info.task.pid`, the per-process filter of task iterators, 6.1+).
    pub fn has_field(&self, path: &str) -> bool {
        self.field(path).is_ok()
    }

    fn offset(&self, path: &str, want_size: u32) -> Result<u32, BtfError> {
        let f = self.field(path)?;
        if f.size != want_size {
            return Err(BtfError::Size {
                path: path.into(),
                got: f.size,
                want: want_size,
            });
        }
        Ok(f.offset)
    }

    /// Every offset the eBPF programs read, checked against the sizes they read.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        Ok(KernelOffsets {
            skc_family: self.offset("sock.__sk_common.skc_family", 2)?,
            skc_state: self.offset("sock.__sk_common.skc_state", 1)?,
            skc_num: self.offset("sock.__sk_common.skc_num", 2)?,
            skc_dport: self.offset("sock.__sk_common.skc_dport", 2)?,
            sk_protocol: self.offset("sock.sk_protocol", 2)?,
            sk_ack_backlog: self.offset("sock.sk_ack_backlog", 4)?,
            sk_max_ack_backlog: self.offset("sock.sk_max_ack_backlog", 4)?,
            sk_socket: self.offset("sock.sk_socket", 8)?,
            socket_file: self.offset("socket.file", 8)?,
            file_f_inode: self.offset("file.f_inode", 8)?,
            inode_i_ino: self.offset("inode.i_ino", 8)?,
            tcp_rcv_nxt: self.offset("tcp_sock.rcv_nxt", 4)?,
            tcp_copied_seq: self.offset("tcp_sock.copied_seq", 4)?,
            tcp_write_seq: self.offset("tcp_sock.write_seq", 4)?,
            tcp_snd_una: self.offset("tcp_sock.snd_una", 4)?,
            tcp_bytes_received: self.offset("tcp_sock.bytes_received", 8)?,
            tcp_bytes_sent: self.offset("tcp_sock.bytes_sent", 8)?,
            tcp_lsndtime: self.offset("tcp_sock.lsndtime", 4)?,
            tcp_lrcvtime: self.offset("tcp_sock.inet_conn.icsk_ack.lrcvtime", 4)?,
            skc_daddr: self.offset("sock.__sk_common.skc_daddr", 4)?,
            // A kernel built without IPv6 has no such field: 0 tells the programs so.
            skc_v6_daddr: match self.offset("sock.__sk_common.skc_v6_daddr", 16) {
                Ok(o) => o,
                Err(BtfError::NoField { .. }) => 0,
                Err(e) => return Err(e),
            },
            sk_type: self.offset("sock.sk_type", 2)?,
            file_private_data: self.offset("file.private_data", 8)?,
            inode_i_mode: self.offset("inode.i_mode", 2)?,
            socket_sk: self.offset("socket.sk", 8)?,
            tcp_segs_in: self.offset("tcp_sock.segs_in", 4)?,
            task_tgid: self.offset("task_struct.tgid", 4)?,
            _pad: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_for_running_kernel() -> Option<(String, String)> {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()?
            .trim()
            .to_string();
        let path = format!(
            "{}/src/sys/btf_fixtures/{release}.txt",
            env!("CARGO_MANIFEST_DIR")
        );
        Some((release, std::fs::read_to_string(path).ok()?))
    }

    /// `name=value` lines: the running kernel's offsets as bpftool's C dump of its BTF and the
    /// C compiler's offsetof see them (`btf_fixtures/offsets_witness.c`), independent of this
    /// reader.
    fn witness_for_running_kernel() -> String {
        let dir = std::env::temp_dir().join(format!("seer-btf-witness-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("witness dir");
        let header = std::process::Command::new("bpftool")
            .args([
                "btf",
                "dump",
                "file",
                "/sys/kernel/btf/vmlinux",
                "format",
                "c",
            ])
            .output()
            .expect("bpftool (Debian package bpftool) must be installed");
        assert!(
            header.status.success(),
            "bpftool: {}",
            String::from_utf8_lossy(&header.stderr)
        );
        std::fs::write(dir.join("vmlinux.h"), &header.stdout).expect("vmlinux.h");
        let src = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/sys/btf_fixtures/offsets_witness.c"
        );
        let cc = std::process::Command::new("cc")
            .args(["-w", "-O0", "-I"])
            .arg(&dir)
            .arg(src)
            .arg("-o")
            .arg(dir.join("witness"))
            .output()
            .expect("cc (Debian package gcc) must be installed");
        assert!(
            cc.status.success(),
            "cc: {}",
            String::from_utf8_lossy(&cc.stderr)
        );
        let out = std::process::Command::new(dir.join("witness"))
            .output()
            .expect("run the witness");
        let _ = std::fs::remove_dir_all(&dir);
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// Checks every `name=value` line of `reference` against what this reader resolved.
    fn check_offsets(reference: &str, got: &KernelOffsets, what: &str) -> usize {
        let mut checked = 0;
        for line in reference.lines() {
            let (name, want) = line.split_once('=').expect("name=value");
            let want: u32 = want.trim().parse().expect("number");
            let have = match name {
                "skc_family" => got.skc_family,
                "skc_state" => got.skc_state,
                "skc_num" => got.skc_num,
                "skc_dport" => got.skc_dport,
                "sk_protocol" => got.sk_protocol,
                "sk_ack_backlog" => got.sk_ack_backlog,
                "sk_max_ack_backlog" => got.sk_max_ack_backlog,
                "sk_socket" => got.sk_socket,
                "socket_file" => got.socket_file,
                "file_f_inode" => got.file_f_inode,
                "inode_i_ino" => got.inode_i_ino,
                "tcp_rcv_nxt" => got.tcp_rcv_nxt,
                "tcp_copied_seq" => got.tcp_copied_seq,
                "tcp_write_seq" => got.tcp_write_seq,
                "tcp_snd_una" => got.tcp_snd_una,
                "tcp_bytes_received" => got.tcp_bytes_received,
                "tcp_bytes_sent" => got.tcp_bytes_sent,
                "tcp_lsndtime" => got.tcp_lsndtime,
                "tcp_lrcvtime" => got.tcp_lrcvtime,
                "skc_daddr" => got.skc_daddr,
                "skc_v6_daddr" => got.skc_v6_daddr,
                "sk_type" => got.sk_type,
                "file_private_data" => got.file_private_data,
                "inode_i_mode" => got.inode_i_mode,
                "socket_sk" => got.socket_sk,
                "tcp_segs_in" => got.tcp_segs_in,
                "task_tgid" => got.task_tgid,
                other => panic!("{what}: field {other} unknown to the test"),
            };
            assert_eq!(have, want, "{name}, against {what}");
            checked += 1;
        }
        checked
    }

    /// The offsets this reader resolves equal those of an independent reading of the running
    /// kernel (bpftool's C dump + the C compiler's offsetof: on every kernel, no fixture
    /// needed), and those bindgen computed where a fixture exists for this kernel build
    /// (`cargo xtask bindgen-offsets` makes one).
    #[test]
    fn offsets_match_an_independent_reading_of_this_kernel() {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string();
        let got = Btf::from_sys_fs()
            .expect("kernel BTF")
            .kernel_offsets()
            .expect("offsets");
        let n = check_offsets(&witness_for_running_kernel(), &got, "bpftool + cc offsetof");
        assert_eq!(n, 27, "every offset checked against the witness");
        match fixture_for_running_kernel() {
            Some((_, fixture)) => {
                let n = check_offsets(&fixture, &got, "the bindgen fixture");
                // Fixtures made before an offset was added lack it.
                assert!(n >= 21, "{n} offsets checked against bindgen");
                println!("{release}: offsets match the witness and the bindgen fixture");
            }
            None => {
                println!("{release}: offsets match the witness (no bindgen fixture for this build)")
            }
        }
    }

    #[test]
    fn missing_btf_says_what_is_needed() {
        let e = Btf::from_file(Path::new("/nonexistent/vmlinux"))
            .err()
            .expect("error")
            .to_string();
        assert!(e.contains("CONFIG_DEBUG_INFO_BTF"), "{e}");
    }

    #[test]
    fn garbage_is_not_btf() {
        let dir = std::env::temp_dir().join(format!("seer-btf-{}", std::process::id()));
        std::fs::write(&dir, b"this is not BTF at all").unwrap();
        let e = Btf::from_file(&dir).err().expect("error").to_string();
        std::fs::remove_file(&dir).ok();
        assert!(
            e.contains("not valid BTF") && e.contains("bad magic"),
            "{e}"
        );
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0]).is_err());
    }

    #[test]
    fn unknown_fields_are_named() {
        let btf = Btf::from_sys_fs().expect("kernel BTF");
        let e = btf.field("tcp_sock.no_such_field").unwrap_err().to_string();
        assert!(e.contains("no_such_field"), "{e}");
        let e = btf.field("no_such_struct.x").unwrap_err().to_string();
        assert!(e.contains("no struct `no_such_struct`"), "{e}");
    }
}
