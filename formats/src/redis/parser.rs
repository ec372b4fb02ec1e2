//! The push-based RDB parser.
//!
//! [`RdbParser::feed`] takes the file in slices of any size. Bytes are
//! copied into a small working buffer at most 64 KiB at a time; every
//! parsing step needs at most a few dozen bytes of it (an opcode, a length,
//! a stream PEL entry), except string payloads, which are streamed: a
//! 512 MB value passes through without being held. Strings whose content
//! matters (AUX fields, encoded containers up to [`RdbLimits`]) are
//! collected in a separate vector bounded by those limits.

use crc::{Crc, Digest, Table, CRC_64_REDIS};

use super::error::RdbError;
use super::listpack::{self, EXPIRE_TIME_MAX};
use super::lzf::LzfDecoder;
use super::program::{self, Container, Op, Use};
use super::summary::{module_name, ChecksumStatus, RdbSummary};
use super::ziplist;

mod cursor;
mod strings;
mod track;

use cursor::{Cur, Step, Stop};
use track::Tracker;

/// CRC-64/Jones, reflected, as Redis computes it over the whole file before
/// the 8-byte trailer.
static CRC64: Crc<u64, Table<16>> = Crc::<u64, Table<16>>::new(&CRC_64_REDIS);

/// Input is moved into the working buffer in pieces of this size, which
/// bounds the buffer whatever slice sizes the caller feeds.
const CHUNK: usize = 64 * 1024;

/// Size bounds for the strings the parser keeps in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RdbLimits {
    /// Encoded containers (listpacks, ziplists, intsets, zipmaps) up to
    /// this many decoded bytes are collected and checked; larger ones are
    /// streamed unchecked and counted in
    /// [`RdbSummary::unvalidated_containers`]. Redis's defaults keep them
    /// to a few KiB, so the default of 16 MiB only matters for servers
    /// configured with very large `*-max-listpack-value` settings.
    pub max_container_bytes: u64,
    /// AUX field names and values up to this size are kept in
    /// [`RdbSummary::aux`]; larger ones are skipped and counted.
    pub max_aux_bytes: u64,
    /// Memory one key may use for its uniqueness checks (set members, hash
    /// fields, stream pending entries). A key that needs more has those
    /// checks abandoned and is counted in [`RdbSummary::unchecked_keys`].
    pub max_tracked_bytes: u64,
}

impl Default for RdbLimits {
    fn default() -> Self {
        RdbLimits { max_container_bytes: 16 << 20, max_aux_bytes: 64 << 10, max_tracked_bytes: 64 << 20 }
    }
}

/// What the parser is in the middle of.
#[derive(Debug)]
enum State {
    /// Waiting for the 9-byte header.
    Magic,
    /// Waiting for an opcode or a value type.
    Top,
    /// Running the program stack.
    Prog,
    /// Streaming a string's payload.
    Str(StrRead),
    /// Waiting for the 8-byte checksum trailer.
    Checksum,
    /// The RDB is complete; anything more is trailing bytes.
    Done,
}

/// A string whose header has been read and whose payload is streaming.
#[derive(Debug)]
struct StrRead {
    use_: Use,
    /// Offset of the string header, for errors.
    start: u64,
    /// Payload bytes (compressed bytes for LZF) not yet consumed.
    left: u64,
    lzf: bool,
    /// The bytes, when the use needs them and they fit the limit.
    data: Option<Vec<u8>>,
}

/// One level of the program stack.
#[derive(Debug)]
enum Frame {
    Prog { ops: &'static [Op], pc: usize, reps: u64, count: u64 },
    Module,
}

/// What the current top-level item is, to account for it when its program
/// completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    Aux,
    ModuleAux,
    Function,
    Key(u8),
}

/// Facts about the key being read, reset after each key.
#[derive(Debug, Default)]
struct KeyScratch {
    expires: bool,
    empty: bool,
    plain_node: bool,
    nonempty_nodes: u64,
    stream_nodes: u64,
    min_expire: u64,
    module: Option<String>,
    aux_key: Option<String>,
    track: Tracker,
}

/// A push-based decoder and validator for Redis RDB files.
///
/// Feed it the file in slices of any size; it checks the structure of
/// every value, every encoded container that fits [`RdbLimits`], and the
/// CRC-64 trailer, and counts keys per database and type.
///
/// ```
/// use cairn_formats::redis::{RdbParser, ChecksumStatus};
///
/// // An empty RDB 10 file saved with `rdbchecksum no`.
/// let mut file = b"REDIS0010".to_vec();
/// file.push(0xff);
/// file.extend_from_slice(&[0; 8]);
/// let mut parser = RdbParser::new();
/// for piece in file.chunks(3) {
///     parser.feed(piece).unwrap();
/// }
/// let summary = parser.finish().unwrap();
/// assert_eq!(summary.version, 10);
/// assert_eq!(summary.checksum, ChecksumStatus::Disabled);
/// assert_eq!(summary.total_keys(), 0);
/// ```
pub struct RdbParser {
    limits: RdbLimits,
    buf: Vec<u8>,
    base: u64,
    pos: usize,
    crc: Digest<'static, u64, Table<16>>,
    state: State,
    stack: Vec<Frame>,
    item: Item,
    db: u64,
    key: KeyScratch,
    lzf: LzfDecoder,
    summary: RdbSummary,
    failed: Option<RdbError>,
}

impl std::fmt::Debug for RdbParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdbParser")
            .field("offset", &self.offset())
            .field("state", &self.state)
            .field("depth", &self.stack.len())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Default for RdbParser {
    fn default() -> Self {
        Self::new()
    }
}

impl RdbParser {
    /// A parser with the default [`RdbLimits`].
    pub fn new() -> Self {
        Self::with_limits(RdbLimits::default())
    }

    /// A parser with explicit size limits.
    pub fn with_limits(limits: RdbLimits) -> Self {
        RdbParser {
            limits,
            buf: Vec::new(),
            base: 0,
            pos: 0,
            crc: CRC64.digest(),
            state: State::Magic,
            stack: Vec::new(),
            item: Item::Aux,
            db: 0,
            key: KeyScratch::default(),
            lzf: LzfDecoder::new(0),
            summary: RdbSummary::default(),
            failed: None,
        }
    }

    /// Consumes `input`, the next bytes of the file.
    ///
    /// # Errors
    /// The first structural problem, checksum mismatch or unsupported
    /// format. After an error the parser is stuck and returns the same
    /// error again.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), RdbError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        while !input.is_empty() {
            self.compact();
            let take = input.len().min(CHUNK);
            self.buf.extend_from_slice(&input[..take]);
            input = &input[take..];
            if let Err(e) = self.run() {
                self.failed = Some(e.clone());
                return Err(e);
            }
        }
        Ok(())
    }

    /// Declares the end of input and returns the summary.
    ///
    /// # Errors
    /// The error `feed` returned, or [`RdbError::Truncated`] if the file
    /// ended before its EOF opcode and trailer.
    pub fn finish(&self) -> Result<&RdbSummary, RdbError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if let State::Done = self.state {
            return Ok(&self.summary);
        }
        let expected = match &self.state {
            State::Magic => "the RDB header",
            State::Top => "an opcode or value type",
            State::Prog => "the rest of a value",
            State::Str(_) => "the rest of a string",
            State::Checksum => "the 8-byte checksum trailer",
            State::Done => "nothing",
        };
        Err(RdbError::Truncated { offset: self.base + self.buf.len() as u64, expected })
    }

    /// What has been learned so far; complete once `finish` succeeds.
    pub fn summary(&self) -> &RdbSummary {
        &self.summary
    }

    /// Bytes consumed so far (fed bytes still buffered for an incomplete
    /// step are not counted).
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    fn compact(&mut self) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.base += self.pos as u64;
            self.pos = 0;
        }
    }

    fn run(&mut self) -> Result<(), RdbError> {
        let buf = std::mem::take(&mut self.buf);
        let result = loop {
            match self.step(&buf) {
                Ok(()) => {}
                Err(Stop::More) => break Ok(()),
                Err(Stop::Fail(e)) => break Err(e),
            }
        };
        self.buf = buf;
        result
    }

    /// Marks `n` bytes from `pos` as consumed and adds them to the CRC.
    fn consume(&mut self, buf: &[u8], n: usize) {
        let end = self.pos + n;
        self.crc.update(&buf[self.pos..end]);
        self.pos = end;
    }

    fn cur<'b>(&self, buf: &'b [u8]) -> Cur<'b> {
        Cur { b: &buf[self.pos..], pos: 0, base: self.base + self.pos as u64 }
    }

    fn step(&mut self, buf: &[u8]) -> Step<()> {
        match self.state {
            State::Magic => self.step_magic(buf),
            State::Top => self.step_top(buf),
            State::Prog => self.step_prog(buf),
            State::Str(_) => self.step_str(buf),
            State::Checksum => {
                let mut c = self.cur(buf);
                let stored = u64::from_le_bytes(c.array()?);
                let offset = self.offset();
                self.pos += 8;
                let computed = std::mem::replace(&mut self.crc, CRC64.digest()).finalize();
                self.summary.rdb_len = offset + 8;
                self.state = State::Done;
                self.summary.checksum = if stored == 0 {
                    ChecksumStatus::Disabled
                } else if stored == computed {
                    ChecksumStatus::Valid(stored)
                } else {
                    return Err(RdbError::ChecksumMismatch { offset, stored, computed }.into());
                };
                Ok(())
            }
            State::Done => {
                let n = buf.len() - self.pos;
                self.summary.trailing_bytes += n as u64;
                self.pos = buf.len();
                Err(Stop::More)
            }
        }
    }

    fn step_magic(&mut self, buf: &[u8]) -> Step<()> {
        let mut c = self.cur(buf);
        let magic = c.bytes(9)?;
        let digits = |s: &[u8]| -> Option<u32> {
            if s.iter().all(u8::is_ascii_digit) {
                std::str::from_utf8(s).ok()?.parse().ok()
            } else {
                None
            }
        };
        let bad = || RdbError::BadMagic { got: magic.escape_ascii().to_string() };
        let version = if let Some(v) = magic.strip_prefix(b"VALKEY") {
            return Err(RdbError::Valkey { version: digits(v).ok_or_else(bad)? }.into());
        } else if let Some(v) = magic.strip_prefix(b"REDIS") {
            digits(v).ok_or_else(bad)?
        } else {
            return Err(bad().into());
        };
        match version {
            1..=12 => {}
            80.. => return Err(RdbError::Valkey { version }.into()),
            _ => return Err(RdbError::UnsupportedVersion { version }.into()),
        }
        self.summary.version = version;
        self.consume(buf, 9);
        self.state = State::Top;
        Ok(())
    }

    fn step_top(&mut self, buf: &[u8]) -> Step<()> {
        let mut c = self.cur(buf);
        let at = c.off();
        let op = c.u8()?;
        let program: &'static [Op] = match op {
            0xff => {
                self.consume(buf, c.pos);
                self.state = if self.summary.version >= 5 { State::Checksum } else { State::Done };
                if self.summary.version < 5 {
                    self.summary.checksum = ChecksumStatus::Absent;
                    self.summary.rdb_len = self.offset();
                }
                return Ok(());
            }
            0xfe => {
                self.db = c.len()?;
                self.summary.dbs.entry(self.db).or_default();
                return self.simple(buf, c);
            }
            0xfd => {
                c.bytes(4)?;
                self.key.expires = true;
                return self.simple(buf, c);
            }
            0xfc => {
                c.bytes(8)?;
                self.key.expires = true;
                return self.simple(buf, c);
            }
            0xfb => {
                let hint = (c.len()?, c.len()?);
                self.summary.dbs.entry(self.db).or_default().resize_hint = Some(hint);
                return self.simple(buf, c);
            }
            0xf9 => {
                c.u8()?;
                return self.simple(buf, c);
            }
            0xf8 | 0xf4 => {
                // IDLE: one length. SLOT_INFO: slot id, keys, expires.
                c.len()?;
                if op == 0xf4 {
                    c.len()?;
                    c.len()?;
                }
                return self.simple(buf, c);
            }
            0xfa => {
                self.item = Item::Aux;
                program::AUX
            }
            0xf7 => {
                self.item = Item::ModuleAux;
                program::MODULE_AUX
            }
            0xf5 => {
                self.item = Item::Function;
                program::FUNCTION
            }
            0xf6 => {
                return Err(RdbError::Unsupported { offset: at, what: "a pre-release (7.0 RC) function library" }.into())
            }
            6 => return Err(RdbError::Unsupported { offset: at, what: "a pre-release (4.0 RC) module value" }.into()),
            t => {
                let value = program::value_program(t).ok_or(RdbError::UnknownType { offset: at, got: t })?;
                if t > program::max_type(self.summary.version) {
                    let expected = "a value type that exists in this RDB version";
                    return Err(RdbError::invalid(at, expected, t).into());
                }
                self.item = Item::Key(t);
                self.push(value, 1);
                program::KEY
            }
        };
        self.push(program, 1);
        self.consume(buf, c.pos);
        self.state = State::Prog;
        Ok(())
    }

    /// Finishes a top-level opcode that was read whole.
    fn simple(&mut self, buf: &[u8], c: Cur<'_>) -> Step<()> {
        self.consume(buf, c.pos);
        Ok(())
    }

    fn push(&mut self, ops: &'static [Op], reps: u64) {
        self.stack.push(Frame::Prog { ops, pc: 0, reps, count: 0 });
    }

    /// Advances the program on top of the stack by one op.
    fn step_prog(&mut self, buf: &[u8]) -> Step<()> {
        let (ops, pc, count) = match self.stack.last_mut() {
            None => {
                self.item_done();
                return Ok(());
            }
            Some(Frame::Module) => return self.step_module(buf),
            Some(Frame::Prog { ops, pc, reps, count }) => {
                if *pc == ops.len() {
                    if *reps > 1 {
                        *reps -= 1;
                        *pc = 0;
                    } else {
                        self.stack.pop();
                    }
                    return Ok(());
                }
                (*ops, *pc, *count)
            }
        };
        let mut c = self.cur(buf);
        let at = c.off();
        let mut new_count = count;
        match ops[pc] {
            Op::Len | Op::WhenOpcode => {
                let v = c.len()?;
                if ops[pc] == Op::WhenOpcode && v != 2 {
                    return Err(RdbError::invalid(at, "MODULE_AUX when-opcode 2 (unsigned integer)", v).into());
                }
            }
            Op::Count | Op::KeyCount | Op::StreamNodes => {
                new_count = c.len()?;
                if ops[pc] == Op::KeyCount && new_count == 0 {
                    self.key.empty = true;
                }
                if ops[pc] == Op::StreamNodes {
                    self.key.stream_nodes = new_count;
                }
            }
            Op::Repeat(body) => {
                self.set_pc(pc + 1, count);
                if count > 0 {
                    self.push(body, count);
                }
                return Ok(());
            }
            Op::Raw(n) => {
                c.bytes(n)?;
            }
            Op::MinExpire => {
                let v = u64::from_le_bytes(c.array()?);
                if v > EXPIRE_TIME_MAX + 1 {
                    return Err(RdbError::invalid(at, "a minimum field expiry of at most 2^48", v).into());
                }
                self.key.min_expire = v;
            }
            Op::FieldTtl | Op::FieldTtlAbs => {
                let ttl = c.len()?;
                let expire_at = match (ops[pc], ttl) {
                    (_, 0) => Some(0),
                    (Op::FieldTtl, t) => t.checked_add(self.key.min_expire).map(|v| v - 1),
                    (_, t) => Some(t),
                };
                match expire_at {
                    Some(v) if v <= EXPIRE_TIME_MAX => {}
                    _ => return Err(RdbError::invalid(at, "a field expiry time below 2^48", ttl).into()),
                }
            }
            Op::TextDouble => {
                let n = c.u8()?;
                if n == 253 {
                    return Err(RdbError::invalid(at, "a score that is a number", "NaN").into());
                }
                if n < 253 {
                    let text = c.bytes(usize::from(n))?;
                    let score = std::str::from_utf8(text).ok().and_then(|s| s.trim().parse::<f64>().ok());
                    match score {
                        Some(v) if !v.is_nan() => {}
                        _ => return Err(RdbError::invalid(at, "a score that is a number", text.escape_ascii()).into()),
                    }
                }
            }
            Op::BinDouble => {
                if f64::from_le_bytes(c.array()?).is_nan() {
                    return Err(RdbError::invalid(at, "a score that is a number", "NaN").into());
                }
            }
            Op::QlContainer => match c.len()? {
                1 => self.key.plain_node = true,
                2 => self.key.plain_node = false,
                v => return Err(RdbError::invalid(at, "a quicklist node kind (1 plain, 2 packed)", v).into()),
            },
            Op::StreamLength => {
                let len = c.len()?;
                if len != 0 && self.key.stream_nodes == 0 {
                    return Err(RdbError::invalid(at, "a stream length of 0 for a stream without nodes", len).into());
                }
            }
            Op::GroupPelId | Op::ConsumerPelId => {
                let id = c.array::<16>()?;
                let limit = self.limits.max_tracked_bytes;
                let checked = if ops[pc] == Op::GroupPelId {
                    self.key.track.group_pel(id, limit)
                } else {
                    self.key.track.consumer_pel(id)
                };
                checked.map_err(|expected| RdbError::invalid(at, expected, "a violation"))?;
            }
            Op::GroupEnd => {
                let checked = self.key.track.group_end();
                checked.map_err(|expected| RdbError::invalid(at, expected, "an unowned entry"))?;
            }
            Op::ModuleId => {
                self.key.module = Some(module_name(c.len()?));
            }
            Op::Module => {
                self.consume(buf, c.pos);
                self.set_pc(pc + 1, count);
                self.stack.push(Frame::Module);
                return Ok(());
            }
            Op::Str(use_) => {
                let read = self.str_header(&mut c, use_)?;
                self.consume(buf, c.pos);
                self.set_pc(pc + 1, count);
                return self.start_str(read);
            }
        }
        self.consume(buf, c.pos);
        self.set_pc(pc + 1, new_count);
        Ok(())
    }

    fn set_pc(&mut self, new_pc: usize, new_count: u64) {
        if let Some(Frame::Prog { pc, count, .. }) = self.stack.last_mut() {
            *pc = new_pc;
            *count = new_count;
        }
    }

    /// One item of a module value (`rdbLoadCheckModuleValue`).
    fn step_module(&mut self, buf: &[u8]) -> Step<()> {
        let mut c = self.cur(buf);
        let at = c.off();
        match c.len()? {
            0 => {
                self.stack.pop();
            }
            1 | 2 => {
                c.len()?;
            }
            3 => {
                c.bytes(4)?;
            }
            4 => {
                c.bytes(8)?;
            }
            5 => {
                let read = self.str_header(&mut c, Use::Skip)?;
                self.consume(buf, c.pos);
                return self.start_str(read);
            }
            v => return Err(RdbError::invalid(at, "a module value opcode (0-5)", v).into()),
        }
        self.consume(buf, c.pos);
        Ok(())
    }
}
