//! Merkle trees as RFC 6962 section 2.1 (and RFC 9162 section 2.1) defines
//! them: `leaf = SHA-256(0x00 ‖ data)`, `node = SHA-256(0x01 ‖ left ‖
//! right)`, the left subtree holding the largest power of two below the
//! size; the empty tree's root is `SHA-256("")`. Leaves here are 32-byte
//! ids (transaction ids in a bundle, bundle ids in a block).

use sha2::{Digest, Sha256};

use super::Hash;

/// `SHA-256(0x00 ‖ leaf)`.
pub fn leaf_hash(leaf: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(leaf.0);
    Hash(h.finalize().into())
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left.0);
    h.update(right.0);
    Hash(h.finalize().into())
}

/// The largest power of two strictly below `n` (`n` ≥ 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// The root of the tree over `leaves`.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Hash::of(b""),
        1 => leaf_hash(&leaves[0]),
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The audit path of leaf `index` (RFC 6962 `PATH(m, D[n])`), from the
/// leaf up; empty when `index` is out of range.
pub fn path(leaves: &[Hash], index: usize) -> Vec<Hash> {
    let mut out = Vec::new();
    if index < leaves.len() {
        path_into(leaves, index, &mut out);
    }
    out
}

fn path_into(leaves: &[Hash], m: usize, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path_into(&leaves[..k], m, out);
        out.push(root(&leaves[k..]));
    } else {
        path_into(&leaves[k..], m - k, out);
        out.push(root(&leaves[..k]));
    }
}

/// Whether `path` proves that `leaf` is leaf `index` of a tree of `size`
/// leaves with root `root` (RFC 9162 section 2.1.3.2).
pub fn verify(leaf: &Hash, index: u64, size: u64, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = leaf_hash(leaf);
    for p in path {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| Hash::of(&(i as u64).to_be_bytes())).collect()
    }

    #[test]
    fn every_leaf_of_every_size_up_to_33_proves_and_no_other_does() {
        for n in 1..=33 {
            let l = leaves(n);
            let r = root(&l);
            for i in 0..n {
                let p = path(&l, i);
                assert!(verify(&l[i], i as u64, n as u64, &p, &r), "size {n} leaf {i}");
                let other = (i + 1) % n;
                if other != i {
                    assert!(!verify(&l[other], i as u64, n as u64, &p, &r), "size {n}: another leaf at {i}");
                    assert!(!verify(&l[i], other as u64, n as u64, &p, &r), "size {n}: leaf {i} at another index");
                }
                // (A wrong size can yield the same root when the path has
                // the same shape: the size is bound by the signed header.)
                assert!(!verify(&l[i], i as u64, 2 * n as u64 + 1, &p, &r), "size {n}: a much larger size");
                let mut bad = p.clone();
                if let Some(h) = bad.first_mut() {
                    h.0[0] ^= 1;
                    assert!(!verify(&l[i], i as u64, n as u64, &bad, &r));
                }
            }
            assert!(!verify(&l[0], n as u64, n as u64, &[], &r), "an index past the end");
        }
    }

    #[test]
    fn rfc6962_shapes() {
        let l = leaves(3);
        // Three leaves: (0, 1) on the left, 2 alone on the right.
        let expect = node_hash(&node_hash(&leaf_hash(&l[0]), &leaf_hash(&l[1])), &leaf_hash(&l[2]));
        assert_eq!(root(&l), expect);
        assert_eq!(path(&l, 2), vec![node_hash(&leaf_hash(&l[0]), &leaf_hash(&l[1]))]);
        assert_eq!(root(&[]), Hash::of(b""));
        // A leaf and an interior node never collide: the prefixes differ.
        assert_ne!(root(&l[..1]), l[0]);
    }
}
