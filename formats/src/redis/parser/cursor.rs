//! A read cursor over the parser's working buffer.
//!
//! Each parsing step reads a few bytes through [`Cur`]; running out of
//! bytes is [`Stop::More`] (wait for the next `feed`), not an error, and the
//! step is retried from its start once more bytes arrive. Only when a step
//! succeeds are its bytes consumed, so partial reads never leave the parser
//! half-way through an item.

use super::RdbError;

/// Why a parsing step stopped.
pub(super) enum Stop {
    /// The working buffer does not hold the whole step yet.
    More,
    /// The input is invalid.
    Fail(RdbError),
}

impl From<RdbError> for Stop {
    fn from(e: RdbError) -> Self {
        Stop::Fail(e)
    }
}

pub(super) type Step<T> = Result<T, Stop>;

/// A read cursor over the unconsumed part of the working buffer that knows
/// absolute offsets. Running out of bytes is `Stop::More`, not an error.
pub(super) struct Cur<'a> {
    pub(super) b: &'a [u8],
    pub(super) pos: usize,
    pub(super) base: u64,
}

impl<'a> Cur<'a> {
    pub(super) fn off(&self) -> u64 {
        self.base + self.pos as u64
    }

    pub(super) fn bytes(&mut self, n: usize) -> Step<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(Stop::More)?;
        let s = self.b.get(self.pos..end).ok_or(Stop::More)?;
        self.pos = end;
        Ok(s)
    }

    pub(super) fn u8(&mut self) -> Step<u8> {
        Ok(self.bytes(1)?[0])
    }

    pub(super) fn array<const N: usize>(&mut self) -> Step<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    /// A length prefix (`rdbLoadLenByRef`): returns the value and whether it
    /// was a special-encoding marker (`11xxxxxx`).
    pub(super) fn len_or_enc(&mut self) -> Step<(u64, bool)> {
        let at = self.off();
        let b = self.u8()?;
        Ok(match b >> 6 {
            0 => (u64::from(b & 0x3f), false),
            1 => (u64::from(b & 0x3f) << 8 | u64::from(self.u8()?), false),
            3 => (u64::from(b & 0x3f), true),
            _ if b == 0x80 => (u64::from(u32::from_be_bytes(self.array()?)), false),
            _ if b == 0x81 => (u64::from_be_bytes(self.array()?), false),
            _ => return Err(RdbError::BadLength { offset: at, got: b }.into()),
        })
    }

    /// A plain length. Redis's `rdbLoadLen` ignores the encoding flag when
    /// the caller does not ask for it, so neither does this.
    pub(super) fn len(&mut self) -> Step<u64> {
        Ok(self.len_or_enc()?.0)
    }
}
