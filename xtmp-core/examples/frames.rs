//! Encodes a few XTMP frames, prints them, and decodes them again the way a
//! TCP receiver does (a byte stream cut into arbitrary chunks) and the way a
//! UDP receiver does (several frames batched in one datagram).
//!
//! `cargo run -p xtmp-core --example frames`

use xtmp_core::wire::{
    DatagramFrames, Deframer, EncryptionType, Flags, Frame, HEADER_LEN, Header, MessageType, WireError,
};

fn main() -> Result<(), WireError> {
    let mut bundle = Header::new(MessageType::BUNDLE_SUBMIT, 0x8f3a_51c2_0d9e_7b14, 41);
    bundle.flags = Flags::ENCRYPTED | Flags::REQUIRES_ACK | Flags::PRIORITY_HIGH;
    bundle.encryption = EncryptionType::AES_256_GCM;
    bundle.key_id = [0x1f; 16];
    let frames = [
        (Header::new(MessageType::HEARTBEAT, 0x8f3a_51c2_0d9e_7b14, 40), &b""[..]),
        (bundle, &b"sealed proof bundle bytes"[..]),
    ];

    let mut stream = Vec::new();
    for (header, payload) in &frames {
        let n = Frame::encode_to(header, payload, &mut stream)?;
        println!("encoded {} ({n} bytes)", header.message_type);
        for line in stream[stream.len() - n..].chunks(32) {
            println!("    {}", line.iter().map(|b| format!("{b:02x}")).collect::<String>());
        }
    }

    println!("\nstream receiver, chunks of 37 bytes:");
    let mut deframer = Deframer::new(64 * 1024);
    for chunk in stream.chunks(37) {
        let mut input = chunk;
        while let Some(frame) = deframer.decode(&mut input)? {
            describe(&frame);
        }
    }

    println!("\ndatagram receiver, both frames in one datagram:");
    for frame in DatagramFrames::new(&stream, 64 * 1024) {
        describe(&frame?);
    }

    println!("\none flipped bit in the second frame's payload:");
    let last = stream.len() - 1;
    stream[last] ^= 0x10;
    match Frame::decode(&stream[HEADER_LEN..], 64 * 1024) {
        Ok(_) => println!("    accepted?!"),
        Err(e) => println!("    rejected: {e}"),
    }
    Ok(())
}

fn describe(frame: &Frame<'_>) {
    let h = frame.header();
    println!(
        "    {} session {:016x} seq {} flags {:?} cipher {} payload {} bytes crc {:08x}",
        h.message_type,
        h.session_id,
        h.sequence,
        h.flags,
        h.encryption,
        frame.payload().len(),
        h.crc
    );
}
