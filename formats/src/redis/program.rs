//! The shape of every RDB value, written as small programs.
//!
//! An RDB value is a tree of length-prefixed repetitions (a stream holds
//! node listpacks, then consumer groups, each with a pending list and
//! consumers, each with its own pending list). Writing one hand-made state
//! per position would be long and easy to get wrong, so each value type is
//! described here as a list of [`Op`]s and the parser runs them with an
//! explicit stack. Every op reads a bounded number of bytes, except
//! [`Op::Str`], which streams its payload; that is what keeps memory bounded
//! whatever the value sizes are.

/// One step of a value program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// A length-encoded integer that is read and dropped.
    Len,
    /// A length that becomes the repeat count of the next [`Op::Repeat`].
    Count,
    /// Like `Count`, but zero means the key is empty: Redis drops such keys
    /// instead of loading them.
    KeyCount,
    /// Runs the body `count` times, `count` being the last `Count` of the
    /// same program.
    Repeat(&'static [Op]),
    /// Fixed-size raw bytes (stream ids, millisecond times, float scores).
    Raw(usize),
    /// The 8-byte minimum field expiry of a hash with field TTLs (type 24);
    /// it must not exceed 2^48.
    MinExpire,
    /// A field TTL relative to the minimum expiry (type 24).
    FieldTtl,
    /// An absolute field TTL (type 22, a 7.4 release candidate format).
    FieldTtlAbs,
    /// A score written as a length byte and ASCII text (type 3).
    TextDouble,
    /// A score as a little-endian IEEE double (type 5); NaN is corrupt.
    BinDouble,
    /// A string, with what to do with its bytes.
    Str(Use),
    /// A quicklist 2 node kind: 1 = plain (one big element), 2 = packed
    /// (a listpack).
    QlContainer,
    /// The number of stream node listpacks: a `Count` that is remembered,
    /// because a non-empty stream needs at least one node.
    StreamNodes,
    /// The stream length, which must be zero if there are no nodes.
    StreamLength,
    /// A 16-byte stream id in a consumer group's pending list; must not
    /// repeat.
    GroupPelId,
    /// A 16-byte stream id in a consumer's pending list; must be in the
    /// group's list and not repeat for this consumer.
    ConsumerPelId,
    /// The end of a consumer group: every pending entry must have an owner.
    GroupEnd,
    /// A module type id (54 bits of name, 10 bits of encoding version).
    ModuleId,
    /// `MODULE_AUX`'s "when" opcode, which must be 2 (unsigned integer).
    WhenOpcode,
    /// A module value: typed items up to an EOF marker.
    Module,
}

/// What a string's bytes are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    /// Only validated (LZF) and counted.
    Skip,
    /// An AUX field name: kept if small.
    AuxKey,
    /// An AUX field value: kept if small.
    AuxValue,
    /// A key name.
    Key,
    /// A set member, hash field or sorted set member: must not repeat
    /// within its key.
    Member,
    /// A stream consumer group name: must not repeat within its stream.
    GroupName,
    /// A consumer name: must not repeat within its group.
    ConsumerName,
    /// A stream node key, which must be a 16-byte stream id.
    StreamNodeKey,
    /// A quicklist node; `ziplist` for the Redis 3.2 to 6.2 quicklist
    /// (type 14), else a listpack or plain node chosen by `QlContainer`.
    QlNode {
        /// Whether packed nodes are ziplists rather than listpacks.
        ziplist: bool,
    },
    /// An encoded container that is checked when it is small enough.
    Container(Container),
}

/// The encoded containers an RDB string can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Container {
    /// A list ziplist (type 10).
    ListZiplist,
    /// A hash or sorted set ziplist of pairs (types 12, 13).
    PairsZiplist,
    /// A listpack of `tuple`-element records whose first element is unique.
    Listpack {
        /// 1 for sets, 2 for hashes and sorted sets, 3 for hashes with TTLs.
        tuple: u8,
    },
    /// An intset (type 11).
    Intset,
    /// A zipmap (type 9).
    Zipmap,
    /// A stream node listpack.
    Stream,
}

impl Container {
    /// The name used in error messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Container::ListZiplist | Container::PairsZiplist => "ziplist",
            Container::Listpack { .. } => "listpack",
            Container::Intset => "intset",
            Container::Zipmap => "zipmap",
            Container::Stream => "stream listpack",
        }
    }
}

use Op::*;

const SKIP: Op = Str(Use::Skip);
const MEMBER: Op = Str(Use::Member);
const LIST: &[Op] = &[KeyCount, Repeat(&[SKIP])];
const SET: &[Op] = &[KeyCount, Repeat(&[MEMBER])];
const ZSET: &[Op] = &[KeyCount, Repeat(&[MEMBER, TextDouble])];
const ZSET_2: &[Op] = &[KeyCount, Repeat(&[MEMBER, BinDouble])];
const HASH: &[Op] = &[KeyCount, Repeat(&[MEMBER, SKIP])];
const MODULE_2: &[Op] = &[ModuleId, Module];
const ZIPMAP: &[Op] = &[Str(Use::Container(Container::Zipmap))];
const LIST_ZIPLIST: &[Op] = &[Str(Use::Container(Container::ListZiplist))];
const INTSET: &[Op] = &[Str(Use::Container(Container::Intset))];
const PAIRS_ZIPLIST: &[Op] = &[Str(Use::Container(Container::PairsZiplist))];
const QUICKLIST: &[Op] = &[KeyCount, Repeat(&[Str(Use::QlNode { ziplist: true })])];
const QUICKLIST_2: &[Op] = &[KeyCount, Repeat(&[QlContainer, Str(Use::QlNode { ziplist: false })])];
const PAIRS_LISTPACK: &[Op] = &[Str(Use::Container(Container::Listpack { tuple: 2 }))];
const SET_LISTPACK: &[Op] = &[Str(Use::Container(Container::Listpack { tuple: 1 }))];
const HASH_META_PRE_GA: &[Op] = &[KeyCount, Repeat(&[FieldTtlAbs, MEMBER, SKIP])];
const HASH_META: &[Op] = &[MinExpire, KeyCount, Repeat(&[FieldTtl, MEMBER, SKIP])];
const HASH_LP_EX_PRE_GA: &[Op] = &[Str(Use::Container(Container::Listpack { tuple: 3 }))];
const HASH_LP_EX: &[Op] = &[Raw(8), Str(Use::Container(Container::Listpack { tuple: 3 }))];

// Streams: node listpacks, metadata, then consumer groups. Version 2 adds
// first id, max deleted id and entries-added to the stream and
// entries-read to each group; version 3 adds each consumer's active time.
const NODE: Op = Repeat(&[Str(Use::StreamNodeKey), Str(Use::Container(Container::Stream))]);
const GROUP_NAME: Op = Str(Use::GroupName);
const GROUP_PEL: Op = Repeat(&[GroupPelId, Raw(8), Len]);
const CONSUMER_PEL: Op = Repeat(&[ConsumerPelId]);
const CONSUMERS_1: Op = Repeat(&[Str(Use::ConsumerName), Raw(8), Count, CONSUMER_PEL]);
const CONSUMERS_3: Op = Repeat(&[Str(Use::ConsumerName), Raw(8), Raw(8), Count, CONSUMER_PEL]);
const STREAM_1: &[Op] = &[
    StreamNodes,
    NODE,
    StreamLength,
    Len,
    Len,
    Count,
    Repeat(&[GROUP_NAME, Len, Len, Count, GROUP_PEL, Count, CONSUMERS_1, GroupEnd]),
];
const STREAM_2: &[Op] = &[
    StreamNodes,
    NODE,
    StreamLength,
    Len,
    Len,
    Len,
    Len,
    Len,
    Len,
    Len,
    Count,
    Repeat(&[GROUP_NAME, Len, Len, Len, Count, GROUP_PEL, Count, CONSUMERS_1, GroupEnd]),
];
const STREAM_3: &[Op] = &[
    StreamNodes,
    NODE,
    StreamLength,
    Len,
    Len,
    Len,
    Len,
    Len,
    Len,
    Len,
    Count,
    Repeat(&[GROUP_NAME, Len, Len, Len, Count, GROUP_PEL, Count, CONSUMERS_3, GroupEnd]),
];

/// The highest value type an RDB version can hold (`rdbIsObjectType` of
/// the Redis release that introduced the version): a newer type in an
/// older file is damage, not a feature.
pub(crate) fn max_type(version: u32) -> u8 {
    match version {
        0..=9 => 15,
        10 => 19,
        11 => 21,
        _ => 25,
    }
}

/// The program for an RDB value type, or `None` if the code is not a value
/// type this decoder reads. Type 6 (pre-release modules) is handled by the
/// caller, as Redis refuses it.
pub(crate) fn value_program(rdb_type: u8) -> Option<&'static [Op]> {
    Some(match rdb_type {
        0 => &[SKIP],
        1 => LIST,
        2 => SET,
        3 => ZSET,
        4 => HASH,
        5 => ZSET_2,
        7 => MODULE_2,
        9 => ZIPMAP,
        10 => LIST_ZIPLIST,
        11 => INTSET,
        12 | 13 => PAIRS_ZIPLIST,
        14 => QUICKLIST,
        15 => STREAM_1,
        16 | 17 => PAIRS_LISTPACK,
        18 => QUICKLIST_2,
        19 => STREAM_2,
        20 => SET_LISTPACK,
        21 => STREAM_3,
        22 => HASH_META_PRE_GA,
        23 => HASH_LP_EX_PRE_GA,
        24 => HASH_META,
        25 => HASH_LP_EX,
        _ => return None,
    })
}

/// `AUX`: a field name and its value.
pub(crate) const AUX: &[Op] = &[Str(Use::AuxKey), Str(Use::AuxValue)];
/// `MODULE_AUX`: module id, when-opcode, when, then a module value.
pub(crate) const MODULE_AUX: &[Op] = &[ModuleId, WhenOpcode, Len, Module];
/// `FUNCTION2`: one string holding a library's source.
pub(crate) const FUNCTION: &[Op] = &[SKIP];
/// A key name, read before its value program.
pub(crate) const KEY: &[Op] = &[Str(Use::Key)];
