//! Message types, flags and encryption types: the code points of the header.

use core::fmt;

/// The message type carried in header byte 5.
///
/// A newtype over the wire byte rather than an enum, so that every byte value
/// can be represented and a receiver can apply the spec's rules for codes it
/// does not know (SPEC.md, "Message types"). The named constants are the codes
/// this version of the protocol defines.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageType(pub u8);

/// The class a message type code belongs to (SPEC.md, "Message types").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TypeClass {
    /// `0x00`: never valid on the wire.
    Invalid,
    /// `0x01..=0x0F`: connection management (handshake, heartbeat, disconnect).
    Connection,
    /// `0x10..=0x4F`: application operations defined by this protocol
    /// (wallet, bundle, registry, streams), including codes reserved in
    /// those blocks for future versions.
    Application,
    /// `0x50..=0xBF`: application-defined extension types, carried opaquely.
    Extension,
    /// `0xC0..=0xEF`: the protocol's own control frames (ACK, key update,
    /// cookie, path challenge, ...), assigned by the session and reliability
    /// sections of the spec.
    Control,
    /// `0xF0..=0xFD`: reserved for future versions.
    Reserved,
    /// `0xFE` (Error) and `0xFF` (Unknown).
    Error,
}

macro_rules! message_types {
    ($( $(#[$doc:meta])* $name:ident = $code:literal, $text:literal; )*) => {
        impl MessageType {
            $( $(#[$doc])* pub const $name: MessageType = MessageType($code); )*

            /// Every message type this version of the protocol names.
            pub const KNOWN: &'static [MessageType] = &[$( MessageType::$name ),*];

            /// The spec's name for this code, if this version defines it.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $code => Some($text), )*
                    _ => None,
                }
            }
        }
    };
}

message_types! {
    /// `0x01` Handshake: client-to-server handshake messages (ClientHello, client Finished).
    HANDSHAKE = 0x01, "Handshake";
    /// `0x02` HandshakeAck: server-to-client handshake messages (ServerHello and its encrypted flight).
    HANDSHAKE_ACK = 0x02, "HandshakeAck";
    /// `0x03` Heartbeat: keeps an idle session alive and measures RTT.
    HEARTBEAT = 0x03, "Heartbeat";
    /// `0x04` Disconnect: closes the session with a code and a reason.
    DISCONNECT = 0x04, "Disconnect";
    /// `0x10` WalletRegister.
    WALLET_REGISTER = 0x10, "WalletRegister";
    /// `0x11` WalletAuth.
    WALLET_AUTH = 0x11, "WalletAuth";
    /// `0x12` WalletBalance.
    WALLET_BALANCE = 0x12, "WalletBalance";
    /// `0x13` WalletTransaction.
    WALLET_TRANSACTION = 0x13, "WalletTransaction";
    /// `0x20` BundleSubmit.
    BUNDLE_SUBMIT = 0x20, "BundleSubmit";
    /// `0x21` BundleStatus.
    BUNDLE_STATUS = 0x21, "BundleStatus";
    /// `0x22` BundleConfirm.
    BUNDLE_CONFIRM = 0x22, "BundleConfirm";
    /// `0x23` BundleSync.
    BUNDLE_SYNC = 0x23, "BundleSync";
    /// `0x30` RegistryQuery.
    REGISTRY_QUERY = 0x30, "RegistryQuery";
    /// `0x31` RegistryUpdate.
    REGISTRY_UPDATE = 0x31, "RegistryUpdate";
    /// `0x32` RegistryStamp.
    REGISTRY_STAMP = 0x32, "RegistryStamp";
    /// `0x40` LiveUpdates stream.
    LIVE_UPDATES = 0x40, "LiveUpdates";
    /// `0x41` EventStream.
    EVENT_STREAM = 0x41, "EventStream";
    /// `0x42` MetricsStream.
    METRICS_STREAM = 0x42, "MetricsStream";
    /// `0xFE` Error: a response carrying an error code and reason.
    ERROR = 0xFE, "Error";
    /// `0xFF` Unknown: the design's catch-all; never sent by this implementation.
    UNKNOWN = 0xFF, "Unknown";
}

impl MessageType {
    /// First code of the control-frame range (`0xC0`).
    pub const CONTROL_FIRST: u8 = 0xC0;
    /// Last code of the control-frame range (`0xEF`).
    pub const CONTROL_LAST: u8 = 0xEF;

    /// The class of this code.
    pub const fn class(self) -> TypeClass {
        match self.0 {
            0x00 => TypeClass::Invalid,
            0x01..=0x0F => TypeClass::Connection,
            0x10..=0x4F => TypeClass::Application,
            0x50..=0xBF => TypeClass::Extension,
            0xC0..=0xEF => TypeClass::Control,
            0xF0..=0xFD => TypeClass::Reserved,
            0xFE..=0xFF => TypeClass::Error,
        }
    }

    /// Whether this is a protocol control frame (`0xC0..=0xEF`).
    pub const fn is_control(self) -> bool {
        matches!(self.class(), TypeClass::Control)
    }
}

impl fmt::Debug for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}(0x{:02X})", self.0),
            None => write!(f, "MessageType(0x{:02X})", self.0),
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl From<u8> for MessageType {
    fn from(code: u8) -> Self {
        MessageType(code)
    }
}

impl From<MessageType> for u8 {
    fn from(t: MessageType) -> Self {
        t.0
    }
}

bitflags::bitflags! {
    /// The header's flag byte (byte 6). Exactly the eight flags of the
    /// design; SPEC.md, "Flags", lists the combinations a receiver rejects.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Flags: u8 {
        /// The payload is sealed with the AEAD named by the encryption type.
        const ENCRYPTED = 0b0000_0001;
        /// The (plaintext) payload is LZ4-compressed.
        const COMPRESSED = 0b0000_0010;
        /// High priority class.
        const PRIORITY_HIGH = 0b0000_0100;
        /// The receiver must acknowledge this frame.
        const REQUIRES_ACK = 0b0000_1000;
        /// The frame carries one fragment of a larger message.
        const FRAGMENTED = 0b0001_0000;
        /// The frame carries the last fragment of a message.
        const LAST_FRAGMENT = 0b0010_0000;
        /// The frame carries an item of a live stream (subscription).
        const STREAM_DATA = 0b0100_0000;
        /// Emergency priority class: scheduled before everything but control frames.
        const EMERGENCY = 0b1000_0000;
    }
}

/// Why a flag byte is rejected (SPEC.md, "Flags").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FlagRule {
    /// `LAST_FRAGMENT` is set without `FRAGMENTED`.
    LastFragmentWithoutFragmented,
    /// Both `PRIORITY_HIGH` and `EMERGENCY` are set: a frame has one priority class.
    TwoPriorityClasses,
    /// `ENCRYPTED` is set but the encryption type is none.
    EncryptedWithoutCipher,
    /// The encryption type names a cipher but `ENCRYPTED` is clear.
    CipherWithoutEncrypted,
    /// A control frame (`0xC0..=0xEF`) carries `COMPRESSED`, `FRAGMENTED`,
    /// `LAST_FRAGMENT` or `STREAM_DATA`.
    ControlFrameDataFlag,
}

impl FlagRule {
    /// A sentence describing the rule that was broken.
    pub const fn describe(self) -> &'static str {
        match self {
            FlagRule::LastFragmentWithoutFragmented => "LAST_FRAGMENT requires FRAGMENTED",
            FlagRule::TwoPriorityClasses => "PRIORITY_HIGH and EMERGENCY are mutually exclusive",
            FlagRule::EncryptedWithoutCipher => "ENCRYPTED is set but the encryption type is none",
            FlagRule::CipherWithoutEncrypted => "the encryption type names a cipher but ENCRYPTED is clear",
            FlagRule::ControlFrameDataFlag => {
                "control frames must not set COMPRESSED, FRAGMENTED, LAST_FRAGMENT or STREAM_DATA"
            }
        }
    }
}

impl fmt::Display for FlagRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// The priority class a frame is scheduled in, from its flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// No priority flag.
    Normal,
    /// `PRIORITY_HIGH`.
    High,
    /// `EMERGENCY`.
    Emergency,
}

impl Flags {
    /// The priority class these flags select (valid flags have at most one).
    pub const fn priority(self) -> Priority {
        if self.contains(Flags::EMERGENCY) {
            Priority::Emergency
        } else if self.contains(Flags::PRIORITY_HIGH) {
            Priority::High
        } else {
            Priority::Normal
        }
    }
}

/// The header's encryption type (byte 32).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EncryptionType(pub u8);

impl EncryptionType {
    /// `0x00`: cleartext payload (handshake messages only; see SPEC.md).
    pub const NONE: EncryptionType = EncryptionType(0x00);
    /// `0x01`: AES-256-GCM, 12-byte nonce, 16-byte tag.
    pub const AES_256_GCM: EncryptionType = EncryptionType(0x01);
    /// `0x02`: ChaCha20-Poly1305, 12-byte nonce, 16-byte tag.
    pub const CHACHA20_POLY1305: EncryptionType = EncryptionType(0x02);
    /// `0xFF`: the test-only null cipher. Never accepted unless the core is
    /// built with its `__`-prefixed testing feature; not part of the protocol.
    pub const TEST_NULL: EncryptionType = EncryptionType(0xFF);

    /// Whether this version of the protocol defines the code (`TEST_NULL`
    /// excluded).
    pub const fn is_known(self) -> bool {
        matches!(self.0, 0x00..=0x02)
    }

    /// Length of the AEAD nonce in bytes (the rest of the 24-byte header
    /// field is zero), or `None` for [`EncryptionType::NONE`] and unknown codes.
    pub const fn nonce_len(self) -> Option<usize> {
        match self.0 {
            0x01 | 0x02 | 0xFF => Some(12),
            _ => None,
        }
    }

    /// The spec's name for this code.
    pub const fn name(self) -> Option<&'static str> {
        match self.0 {
            0x00 => Some("None"),
            0x01 => Some("AES-256-GCM"),
            0x02 => Some("ChaCha20-Poly1305"),
            0xFF => Some("TestNull"),
            _ => None,
        }
    }
}

impl fmt::Debug for EncryptionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}(0x{:02X})", self.0),
            None => write!(f, "EncryptionType(0x{:02X})", self.0),
        }
    }
}

impl fmt::Display for EncryptionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
