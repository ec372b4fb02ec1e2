//! String reading and the bookkeeping done when an item completes.
//!
//! An RDB string is a length prefix followed by raw bytes, or a special
//! encoding: an 8/16/32-bit integer, or LZF-compressed bytes with their
//! compressed and raw lengths. The header is read in one bounded step; the
//! payload is then streamed by [`RdbParser::step_str`] and, for the uses
//! that need it, collected up to the configured limit.

use super::*;

/// Initial capacity for collected strings; they grow as bytes arrive, so a
/// corrupt length never causes a large allocation by itself.
const INITIAL_COLLECT: u64 = 64 << 10;

impl RdbParser {
    /// Reads a string header and decides what to do with the payload.
    pub(super) fn str_header(&mut self, c: &mut Cur<'_>, use_: Use) -> Step<StrRead> {
        let start = c.off();
        let (v, special) = c.len_or_enc()?;
        let (len, left, lzf, int_text) = if special {
            match v {
                0 => (0, 0, false, Some(i64::from(i8::from_le_bytes(c.array()?)))),
                1 => (0, 0, false, Some(i64::from(i16::from_le_bytes(c.array()?)))),
                2 => (0, 0, false, Some(i64::from(i32::from_le_bytes(c.array()?)))),
                3 => {
                    let clen = c.len()?;
                    let len = c.len()?;
                    (len, clen, true, None)
                }
                _ => return Err(RdbError::BadStringEncoding { offset: start, got: v as u8 }.into()),
            }
        } else {
            (v, v, false, None)
        };
        // Integers are handed over as the decimal text Redis would load.
        let int_text = int_text.map(|i| i.to_string().into_bytes());
        let len = int_text.as_ref().map_or(len, |t| t.len() as u64);

        let limit = match use_ {
            Use::AuxKey | Use::AuxValue => Some(self.limits.max_aux_bytes),
            Use::Container(_) => Some(self.limits.max_container_bytes),
            Use::QlNode { ziplist } if ziplist || !self.key.plain_node => Some(self.limits.max_container_bytes),
            Use::Member | Use::GroupName | Use::ConsumerName if !self.key.track.abandoned() => {
                Some(self.limits.max_tracked_bytes)
            }
            Use::StreamNodeKey => Some(16),
            _ => None,
        };
        match use_ {
            Use::StreamNodeKey if len != 16 => {
                return Err(RdbError::invalid(start, "a 16-byte stream node key", format!("{len} bytes")).into());
            }
            Use::QlNode { .. } if len == 0 => {
                return Err(RdbError::invalid(start, "a non-empty quicklist node", "0 bytes").into());
            }
            _ => {}
        }
        let data = match (int_text, limit) {
            (Some(text), _) => Some(text),
            (None, Some(max)) if len <= max => Some(Vec::with_capacity(len.min(INITIAL_COLLECT) as usize)),
            _ => None,
        };
        if lzf {
            self.lzf.reset(len);
        }
        Ok(StrRead { use_, start, left, lzf, data })
    }

    /// Enters the string state, or completes the string at once if it has
    /// no payload left (integers, empty strings).
    pub(super) fn start_str(&mut self, read: StrRead) -> Step<()> {
        if read.left == 0 {
            self.finish_str(read)
        } else {
            self.state = State::Str(read);
            Ok(())
        }
    }

    /// Streams as much of the payload as the buffer holds.
    pub(super) fn step_str(&mut self, buf: &[u8]) -> Step<()> {
        let State::Str(mut read) = std::mem::replace(&mut self.state, State::Prog) else {
            return Ok(());
        };
        let avail = buf.len() - self.pos;
        if avail == 0 {
            self.state = State::Str(read);
            return Err(Stop::More);
        }
        let n = read.left.min(avail as u64) as usize;
        let chunk = &buf[self.pos..self.pos + n];
        if read.lzf {
            let start = read.start;
            self.lzf.feed(chunk, read.data.as_mut()).map_err(|source| RdbError::Lzf { offset: start, source })?;
        } else if let Some(d) = read.data.as_mut() {
            d.extend_from_slice(chunk);
        }
        read.left -= n as u64;
        self.consume(buf, n);
        if read.left > 0 {
            self.state = State::Str(read);
            Ok(())
        } else {
            self.finish_str(read)
        }
    }

    /// Checks a complete string and hands its bytes to their use.
    fn finish_str(&mut self, read: StrRead) -> Step<()> {
        if read.lzf {
            self.lzf.finish().map_err(|source| RdbError::Lzf { offset: read.start, source })?;
        }
        self.state = State::Prog;
        let start = read.start;
        let data = read.data;
        match read.use_ {
            Use::Skip | Use::Key => {}
            Use::Member | Use::GroupName | Use::ConsumerName | Use::StreamNodeKey => {
                let limit = self.limits.max_tracked_bytes;
                let track = &mut self.key.track;
                let checked = match read.use_ {
                    Use::Member => track.member(data, limit),
                    Use::GroupName => track.group(data, limit),
                    Use::ConsumerName => track.consumer(data, limit),
                    _ => {
                        let mut id = [0u8; 16];
                        if let Some(d) = data.as_deref().filter(|d| d.len() == 16) {
                            id.copy_from_slice(d);
                        }
                        track.node_key(id, limit)
                    }
                };
                checked.map_err(|expected| RdbError::invalid(start, expected, "a repeat"))?;
            }
            Use::AuxKey => {
                self.key.aux_key = data.map(|d| String::from_utf8_lossy(&d).into_owned());
            }
            Use::AuxValue => match (self.key.aux_key.take(), data) {
                (Some(k), Some(v)) => self.summary.aux.push((k, String::from_utf8_lossy(&v).into_owned())),
                _ => self.summary.oversized_aux += 1,
            },
            Use::Container(kind) => {
                let Some(d) = data else {
                    self.summary.unvalidated_containers += 1;
                    return Ok(());
                };
                let checked = match kind {
                    Container::ListZiplist => ziplist::validate_ziplist(&d, false),
                    Container::PairsZiplist => ziplist::validate_ziplist(&d, true),
                    Container::Listpack { tuple } => listpack::validate(&d, u64::from(tuple), true),
                    Container::Intset => ziplist::validate_intset(&d),
                    Container::Zipmap => ziplist::validate_zipmap(&d),
                    Container::Stream => listpack::validate_stream(&d),
                };
                let n = checked.map_err(|source| RdbError::Container { offset: start, kind: kind.name(), source })?;
                if n == 0 {
                    self.key.empty = true;
                }
            }
            Use::QlNode { ziplist } => {
                if !ziplist && self.key.plain_node {
                    self.key.nonempty_nodes += 1;
                    return Ok(());
                }
                let Some(d) = data else {
                    self.summary.unvalidated_containers += 1;
                    self.key.nonempty_nodes += 1;
                    return Ok(());
                };
                let (checked, kind) = if ziplist {
                    (ziplist::validate_ziplist(&d, false), "quicklist ziplist node")
                } else {
                    (listpack::validate(&d, 1, false), "quicklist listpack node")
                };
                let n = checked.map_err(|source| RdbError::Container { offset: start, kind, source })?;
                // Redis drops empty nodes; a list made only of them is an
                // empty key.
                if n > 0 {
                    self.key.nonempty_nodes += 1;
                }
            }
        }
        Ok(())
    }

    /// Accounts for a completed top-level item and returns to the opcode
    /// loop.
    pub(super) fn item_done(&mut self) {
        match self.item {
            Item::Key(t) => {
                let key = std::mem::take(&mut self.key);
                let empty = key.empty || (matches!(t, 14 | 18) && key.nonempty_nodes == 0);
                if key.track.abandoned() {
                    self.summary.unchecked_keys += 1;
                }
                if empty {
                    self.summary.empty_keys_skipped += 1;
                } else {
                    let db = self.summary.dbs.entry(self.db).or_default();
                    db.keys += 1;
                    db.expires += u64::from(key.expires);
                    db.kinds.add(t);
                    *self.summary.rdb_types.entry(t).or_default() += 1;
                    if let Some(m) = key.module {
                        *self.summary.module_types.entry(m).or_default() += 1;
                    }
                }
            }
            Item::ModuleAux => {
                // Only the module name belongs to this item; an expiry read
                // before it still applies to the next key, as in Redis.
                let name = self.key.module.take().unwrap_or_default();
                *self.summary.module_aux.entry(name).or_default() += 1;
            }
            Item::Function => self.summary.functions += 1,
            Item::Aux => {}
        }
        self.state = State::Top;
    }
}
