//! Checks of a PyTorch checkpoint's length fields before burn-store reads it.
//!
//! burn-store's reader allocates what a file announces: a zip entry's declared size, a pickle
//! string's or byte string's length, a legacy storage's element count. A corrupt file announcing
//! 2^40 bytes would abort the process. [`check`] walks the zip's central directory and the
//! pickles' opcodes (no interpretation: only their arguments' lengths) and refuses any length
//! that runs past the end of the file, so nothing burn-store allocates from a length field
//! exceeds the file's size (or, for a compressed zip entry, deflate's 1032:1 ratio to it).

use std::fs::File;

use super::safetensors_file::read_at;

/// The most a compressed zip entry may expand (deflate's limit is about 1032:1).
const MAX_RATIO: u64 = 1032;

/// Why a file is refused.
type Why = String;

fn u16_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from(u16::from_le_bytes(
        b.get(at..at + 2)?.try_into().ok()?,
    )))
}

fn u32_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from(u32::from_le_bytes(
        b.get(at..at + 4)?.try_into().ok()?,
    )))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Checks the checkpoint `file` of `len` bytes (a torch zip, or the legacy format of a
/// sequence of pickles and raw storages). Of a zip, only its central directory and its pickle
/// are read; a legacy file (PyTorch before 1.6) is read whole.
pub(super) fn check(file: &File, len: u64) -> Result<(), Why> {
    let io = |e: std::io::Error| format!("reading the file: {e}");
    let mut magic = [0u8; 4];
    if len >= 4 {
        read_at(file, &mut magic, 0).map_err(io)?;
    }
    if magic == *b"PK\x03\x04" {
        return check_zip(file, len);
    }
    let mut all = vec![0u8; usize::try_from(len).map_err(|_| "too large".to_string())?];
    read_at(file, &mut all, 0).map_err(io)?;
    check_legacy(&all)
}

/// `n` bytes of `file` at `offset`, `n` checked against the file's `len` first.
fn bytes_at(file: &File, len: u64, offset: u64, n: u64) -> Result<Vec<u8>, Why> {
    if offset.checked_add(n).is_none_or(|end| end > len) {
        return Err(format!(
            "truncated or corrupt zip: {n} bytes at byte {offset} run past the end of the \
             {len}-byte file"
        ));
    }
    // At most the file's size, checked above.
    let mut buf = vec![0u8; n as usize];
    read_at(file, &mut buf, offset).map_err(|e| format!("reading the file: {e}"))?;
    Ok(buf)
}

/// The zip's central directory: every entry within the file, its declared size within the
/// file (stored) or within [`MAX_RATIO`] of it (compressed); the pickle's opcodes.
fn check_zip(file: &File, len: u64) -> Result<(), Why> {
    let truncated = || "truncated or corrupt zip: no readable central directory".to_string();
    // The end-of-central-directory record: 22 bytes and a comment of up to 65535.
    let tail_start = len.saturating_sub(22 + 65_535);
    let tail = bytes_at(file, len, tail_start, len - tail_start)?;
    let eocd = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..].starts_with(&[0x50, 0x4b, 0x05, 0x06]))
        .ok_or_else(truncated)?;
    let mut entries = u16_at(&tail, eocd + 10).ok_or_else(truncated)?;
    let mut cd_size = u32_at(&tail, eocd + 12).ok_or_else(truncated)?;
    let mut cd_offset = u32_at(&tail, eocd + 16).ok_or_else(truncated)?;
    if entries == 0xffff || cd_size == 0xffff_ffff || cd_offset == 0xffff_ffff {
        // Zip64: a locator just before the record points at the zip64 record.
        let locator = (tail_start + eocd as u64)
            .checked_sub(20)
            .ok_or_else(truncated)?;
        let locator = bytes_at(file, len, locator, 20)?;
        if !locator.starts_with(&[0x50, 0x4b, 0x06, 0x07]) {
            return Err(truncated());
        }
        let record = u64_at(&locator, 8).ok_or_else(truncated)?;
        let record = bytes_at(file, len, record, 56)?;
        if !record.starts_with(&[0x50, 0x4b, 0x06, 0x06]) {
            return Err(truncated());
        }
        entries = u64_at(&record, 32).ok_or_else(truncated)?;
        cd_size = u64_at(&record, 40).ok_or_else(truncated)?;
        cd_offset = u64_at(&record, 48).ok_or_else(truncated)?;
    }
    if entries > cd_size / 46 + 1 {
        return Err(format!(
            "truncated or corrupt zip: a central directory of {entries} entries in {cd_size} \
             bytes"
        ));
    }
    let b = bytes_at(file, len, cd_offset, cd_size)?;
    let mut at = 0usize;
    for _ in 0..entries {
        if !b
            .get(at..)
            .is_some_and(|r| r.starts_with(&[0x50, 0x4b, 0x01, 0x02]))
        {
            return Err(truncated());
        }
        let field = |off: usize| u32_at(&b, at + off).ok_or_else(truncated);
        let method = u16_at(&b, at + 10).ok_or_else(truncated)?;
        let (mut compressed, mut size, mut local) = (field(20)?, field(24)?, field(42)?);
        let name_len = u16_at(&b, at + 28).ok_or_else(truncated)? as usize;
        let extra_len = u16_at(&b, at + 30).ok_or_else(truncated)? as usize;
        let comment_len = u16_at(&b, at + 32).ok_or_else(truncated)? as usize;
        let name = b.get(at + 46..at + 46 + name_len).ok_or_else(truncated)?;
        let name = String::from_utf8_lossy(name).into_owned();
        let extra = b
            .get(at + 46 + name_len..at + 46 + name_len + extra_len)
            .ok_or_else(truncated)?;
        // Zip64 sizes: in the extra field 0x0001, for each field that reads 0xffffffff.
        let mut e = 0;
        while e + 4 <= extra.len() {
            let (id, n) = (
                u16_at(extra, e).unwrap_or(0),
                u16_at(extra, e + 2).unwrap_or(0),
            );
            let data = extra.get(e + 4..e + 4 + n as usize).unwrap_or(&[]);
            if id == 1 {
                let mut k = 0;
                for v in [&mut size, &mut compressed, &mut local] {
                    if *v == 0xffff_ffff {
                        *v = u64_at(data, k).unwrap_or(u64::MAX);
                        k += 8;
                    }
                }
            }
            e += 4 + n as usize;
        }
        let limit = if method == 0 {
            compressed
        } else {
            compressed.saturating_mul(MAX_RATIO).saturating_add(64)
        };
        if local.checked_add(compressed).is_none_or(|end| end > len) || size > limit {
            return Err(format!(
                "truncated or corrupt zip: entry {name} claims {size} bytes ({compressed} \
                 stored at byte {local}) in a {len}-byte file"
            ));
        }
        if name.ends_with("data.pkl") && method == 0 {
            // The local header: 30 bytes, the name and an extra field of its own.
            let header = bytes_at(file, len, local, 30)?;
            let n = u16_at(&header, 26).ok_or_else(truncated)?;
            let x = u16_at(&header, 28).ok_or_else(truncated)?;
            let pickle = bytes_at(file, len, local + 30 + n + x, compressed)?;
            scan_pickle(&pickle, 0).map_err(|why| format!("{name}: {why}"))?;
        }
        at += 46 + name_len + extra_len + comment_len;
    }
    Ok(())
}

/// The legacy format: five pickles (magic number, protocol, system information, the state
/// dict, the storage keys), then for each storage a pickle, an 8-byte element count and the
/// elements, as burn-store reads them.
fn check_legacy(b: &[u8]) -> Result<(), Why> {
    let mut at = 0;
    for _ in 0..5 {
        match scan_pickle(b, at)? {
            Some((end, _)) => at = end,
            // Not a pickle burn-store could read: it will refuse the file itself.
            None => return Ok(()),
        }
    }
    while at < b.len() {
        // A storage's pickle names its class; anything else ends the check (and burn-store's
        // walk of the storages).
        let Ok(Some((end, globals))) = scan_pickle(b, at) else {
            return Ok(());
        };
        let Some(count) = u64_at(b, end) else {
            return Ok(());
        };
        let Some(size) = globals.iter().rev().find_map(|g| storage_size(g)) else {
            return Ok(());
        };
        let left = (b.len() - end - 8) as u64;
        if count.checked_mul(size).is_none_or(|n| n > left) {
            return Err(format!(
                "truncated or corrupt: a storage at byte {end} claims {count} elements of \
                 {size} bytes, {left} bytes are left in the file"
            ));
        }
        at = end + 8 + (count * size) as usize;
    }
    Ok(())
}

/// Bytes per element of a torch storage class.
fn storage_size(class: &str) -> Option<u64> {
    Some(match class {
        "DoubleStorage" | "LongStorage" | "ComplexFloatStorage" => 8,
        "FloatStorage" | "IntStorage" => 4,
        "HalfStorage" | "BFloat16Storage" | "ShortStorage" => 2,
        "ByteStorage" | "CharStorage" | "BoolStorage" => 1,
        _ => return None,
    })
}

/// How an opcode's argument is laid out.
enum Arg {
    Fixed(usize),
    Line(usize),
    /// A little-endian length of this many bytes, then that many bytes.
    Counted(usize),
}

fn arg(op: u8) -> Option<Arg> {
    use Arg::*;
    Some(match op {
        b'('
        | b'.'
        | b'0'
        | b'1'
        | b'2'
        | b'N'
        | b'R'
        | b'a'
        | b'b'
        | b'd'
        | b'e'
        | b'l'
        | b't'
        | b's'
        | b'u'
        | b'}'
        | b']'
        | b')'
        | b'Q'
        | b'o'
        | 0x81
        | 0x85..=0x89
        | 0x8f..=0x94
        | 0x97
        | 0x98 => Fixed(0),
        b'K' | b'h' | b'q' | 0x80 | 0x82 => Fixed(1),
        b'M' | 0x83 => Fixed(2),
        b'J' | b'j' | b'r' | 0x84 => Fixed(4),
        b'G' | 0x95 => Fixed(8),
        b'I' | b'L' | b'F' | b'S' | b'V' | b'g' | b'p' | b'P' => Line(1),
        b'c' | b'i' => Line(2),
        b'U' | 0x8c | b'C' | 0x8a => Counted(1),
        b'T' | b'X' | b'B' | 0x8b => Counted(4),
        0x8d | 0x8e | 0x96 => Counted(8),
        _ => return None,
    })
}

/// Walks the pickle starting at byte `at` of `b` to its STOP opcode: `Ok(Some((end, globals)))`
/// with the byte after it and the class names of its GLOBAL opcodes; `Ok(None)` for an opcode
/// this scan does not know (the reader refuses it); an error for a length past the end.
fn scan_pickle(b: &[u8], mut at: usize) -> Result<Option<(usize, Vec<String>)>, Why> {
    let mut globals = Vec::new();
    let end = |at: usize| format!("truncated: a pickle runs past the end at byte {at}");
    loop {
        let &op = b.get(at).ok_or_else(|| end(at))?;
        let Some(kind) = arg(op) else {
            return Ok(None);
        };
        at += 1;
        match kind {
            Arg::Fixed(n) => {
                if b.len() - at < n {
                    return Err(end(at));
                }
                at += n;
            }
            Arg::Line(lines) => {
                let mut last = "";
                for _ in 0..lines {
                    let nl = b[at..]
                        .iter()
                        .position(|&c| c == b'\n')
                        .ok_or_else(|| end(at))?;
                    last = std::str::from_utf8(&b[at..at + nl]).unwrap_or("");
                    at += nl + 1;
                }
                if op == b'c' {
                    globals.push(last.to_string());
                }
            }
            Arg::Counted(width) => {
                let mut raw = [0u8; 8];
                raw[..width].copy_from_slice(b.get(at..at + width).ok_or_else(|| end(at))?);
                at += width;
                let n = u64::from_le_bytes(raw);
                let left = (b.len() - at) as u64;
                // BINSTRING and LONG4 lengths are signed.
                let negative = width == 4 && matches!(op, b'T' | 0x8b) && n >= 1 << 31;
                if n > left || negative {
                    return Err(format!(
                        "truncated or corrupt: a pickle opcode {op:#04x} at byte {} announces \
                         {n} bytes, {left} are left",
                        at - width - 1
                    ));
                }
                at += n as usize;
            }
        }
        if op == b'.' {
            return Ok(Some((at, globals)));
        }
    }
}
