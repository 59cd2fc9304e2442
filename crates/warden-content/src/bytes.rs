//! Small byte helpers for the hand-written scanners. Out-of-range reads yield `0`, which every
//! predicate below treats as a boundary, so scanners never index out of bounds.

/// The byte at `i`, or `0` past the end.
#[inline]
pub(crate) fn at(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

/// The byte before `i`, or `0` at the start.
#[inline]
pub(crate) fn before(b: &[u8], i: usize) -> u8 {
    match i.checked_sub(1) {
        Some(j) => at(b, j),
        None => 0,
    }
}

/// ASCII digit.
#[inline]
pub(crate) fn digit(c: u8) -> bool {
    c.is_ascii_digit()
}

/// ASCII letter or digit.
#[inline]
pub(crate) fn alnum(c: u8) -> bool {
    c.is_ascii_alphanumeric()
}

/// ASCII letter, digit or underscore.
#[inline]
pub(crate) fn word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Number of ASCII digits in `b[start..end]`.
pub(crate) fn count_digits(b: &[u8], start: usize, end: usize) -> usize {
    b.get(start..end)
        .map_or(0, |s| s.iter().filter(|c| c.is_ascii_digit()).count())
}

/// Byte offset -> char offset conversion for ascending byte offsets within one string.
pub(crate) struct CharCounter<'a> {
    s: &'a str,
    ascii: bool,
    byte: usize,
    chars: usize,
}

impl<'a> CharCounter<'a> {
    /// A counter at the start of `s`.
    pub(crate) fn new(s: &'a str) -> Self {
        CharCounter {
            s,
            ascii: s.is_ascii(),
            byte: 0,
            chars: 0,
        }
    }

    /// Char offset of byte offset `b` (a char boundary). Cheapest when called with ascending `b`.
    pub(crate) fn chars_at(&mut self, b: usize) -> usize {
        if self.ascii {
            return b;
        }
        if b < self.byte {
            self.byte = 0;
            self.chars = 0;
        }
        let n = self.s.get(self.byte..b).map_or(0, |t| t.chars().count());
        self.byte = b;
        self.chars += n;
        self.chars
    }
}
