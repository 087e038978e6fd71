//! Secret byte strings: zeroized on drop, never cloned, never printed.

use core::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// `N` secret bytes.
///
/// Zeroized when dropped; no `Clone` or `Copy`; `Debug` prints only the
/// length. Compare with [`Secret::ct_eq`], which takes constant time.
pub struct Secret<const N: usize>([u8; N]);

impl<const N: usize> Secret<N> {
    /// Takes ownership of `bytes`. The caller should not keep a copy.
    pub fn new(bytes: [u8; N]) -> Self {
        Secret(bytes)
    }

    /// All-zero secret, to be filled in place with [`Secret::expose_mut`].
    pub fn zero() -> Self {
        Secret([0; N])
    }

    /// The secret bytes. Keep the borrow short and do not copy them out.
    pub fn expose(&self) -> &[u8; N] {
        &self.0
    }

    /// Mutable access, for filling a secret in place.
    pub fn expose_mut(&mut self) -> &mut [u8; N] {
        &mut self.0
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &[u8; N]) -> bool {
        self.0.ct_eq(other).into()
    }
}

impl<const N: usize> Drop for Secret<N> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<const N: usize> fmt::Debug for Secret<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret<{N}>(redacted)")
    }
}

/// Constant-time comparison of two byte strings of equal length (MACs, key
/// ids, tokens). Different lengths compare unequal.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}
