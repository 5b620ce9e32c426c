//! HMAC-SHA-256 states that are wiped when dropped.
//!
//! A keyed HMAC state (its inner and outer SHA-256 states after the padded key) is as good as
//! the key to whoever reads it: with it one computes the MAC of anything. The `hmac` 0.12 and
//! `sha2` 0.10 crates offer no zeroize, so [`MacState`] wraps their state and overwrites it
//! with zeros when it is dropped ([`zeroize::zeroize_flat_type`]), and finishes in place
//! (`finalize_reset`), so that the state a MAC was computed in is the one wiped rather
//! than a copy moved away. What stays unwiped are the stack temporaries of a SHA-256
//! compression inside the crates, overwritten by the next calls; that is the limit of what can
//! be done without replacing the primitives, which trayback does not hand-write.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

// `zeroize_flat_type` requires a flat type: no pointers, nothing with a destructor, and zeros
// a valid value (the state is arrays of integers and a buffer position). A version of the
// crates that broke the first two would fail to build here.
const _: () = assert!(!std::mem::needs_drop::<HmacSha256>());

/// A keyed HMAC-SHA-256 state, wiped when dropped. Cloning copies the keyed state into a new
/// value that is wiped in its turn (what the per-id hashers of a medium do: cloning is cheaper
/// than keying anew).
#[derive(Clone)]
pub struct MacState(HmacSha256);

impl Drop for MacState {
    fn drop(&mut self) {
        // SAFETY: `HmacSha256` is flat (checked above: no drop glue; it holds integer
        // arrays only, for which all zeros is valid), `self.0` is exclusively ours, and
        // nothing reads it after this.
        unsafe { zeroize::zeroize_flat_type(&mut self.0 as *mut HmacSha256) }
    }
}

impl zeroize::ZeroizeOnDrop for MacState {}

impl std::fmt::Debug for MacState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacState(…)")
    }
}

impl MacState {
    /// HMAC-SHA-256 keyed with `key`.
    pub fn new(key: &[u8]) -> MacState {
        MacState(<HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length"))
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The MAC of what was given; the state is then wiped (dropped).
    pub fn finish(mut self) -> [u8; 32] {
        self.0.finalize_reset().into_bytes().into()
    }

    /// Whether the MAC of what was given is `tag`, compared in constant time.
    pub fn verify(mut self, tag: &[u8]) -> bool {
        self.0.verify_slice_reset(tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wrapped_state_computes_plain_hmac_sha256() {
        // RFC 4231 test case 2.
        let mut m = MacState::new(b"Jefe");
        m.update(b"what do ya want ");
        let c = m.clone();
        m.update(b"for nothing?");
        let tag = m.finish();
        assert_eq!(
            hex::encode(tag),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let mut c2 = c.clone();
        c2.update(b"for nothing?");
        assert!(c2.verify(&tag));
        let mut c3 = c;
        c3.update(b"for something");
        assert!(!c3.verify(&tag));
    }
}
