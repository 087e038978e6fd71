//! The UDP sockets of a sharded server: one per shard, all bound to one
//! port with `SO_REUSEPORT`, and on Linux a classic BPF program that makes
//! the kernel hand each datagram to the socket of the shard its session id
//! names (SPEC.md 3.8.1). Where that is not available the datagrams still
//! arrive, on whichever socket the kernel picks, and the receiving shard
//! forwards each one to its owner.

use std::io;
use std::net::{SocketAddr, UdpSocket};

/// Sockets bound to `addr` (the first picks the port when `addr`'s is 0,
/// the others join it), and whether the kernel routes datagrams by shard
/// (tried when `steer`). One socket when `count` is 1 or the platform has
/// no `SO_REUSEPORT`.
pub(crate) fn bind(addr: SocketAddr, count: usize, steer: bool) -> io::Result<(Vec<UdpSocket>, bool)> {
    #[cfg(unix)]
    let group = if count > 1 { bind_reuseport(addr, count, steer)? } else { (vec![UdpSocket::bind(addr)?], false) };
    #[cfg(not(unix))]
    let group = (vec![UdpSocket::bind(addr)?], false);
    for s in &group.0 {
        size_buffers(s);
    }
    Ok(group)
}

/// The receive and send buffers a server asks for on each UDP socket. The
/// kernel's default (about 208 KiB on Linux) holds under sixty
/// 3,300-byte hellos: a burst of clients (a NAT's worth reconnecting
/// after a restart) overflowed it and waited for their retransmissions.
/// Linux grants at most `net.core.rmem_max` / `wmem_max` (often 4 MiB
/// or less); what it grants is logged.
pub(crate) const UDP_BUFFER: usize = 4 << 20;

fn size_buffers(s: &UdpSocket) {
    let sock = socket2::SockRef::from(s);
    let _ = sock.set_recv_buffer_size(UDP_BUFFER);
    let _ = sock.set_send_buffer_size(UDP_BUFFER);
    tracing::debug!(
        recv = sock.recv_buffer_size().unwrap_or(0),
        send = sock.send_buffer_size().unwrap_or(0),
        "UDP socket buffers"
    );
}

#[cfg(unix)]
fn bind_reuseport(mut addr: SocketAddr, count: usize, steer: bool) -> io::Result<(Vec<UdpSocket>, bool)> {
    use socket2::{Domain, Socket, Type};
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
        s.set_reuse_port(true)?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.bind(&addr.into())?;
        let s: UdpSocket = s.into();
        // The others join the port the first one got.
        addr = s.local_addr()?;
        sockets.push(s);
    }
    if !steer {
        return Ok((sockets, false));
    }
    let steered = attach_routing(&sockets[0], count);
    if let Err(e) = &steered {
        tracing::warn!(error = %e, "no kernel routing of datagrams by shard: the shards hand them on");
    }
    Ok((sockets, steered.is_ok()))
}

/// Attaches the routing program to the group of `socket` (SPEC.md 3.8.1):
/// `A = payload[12..16]` (the low half of the session id, big endian);
/// `A = A % count`; return `A`, the index of the socket in its group (in
/// the order they were bound). An index past the group (a socket closed)
/// makes the kernel fall back to its hash.
#[cfg(target_os = "linux")]
fn attach_routing(socket: &UdpSocket, count: usize) -> io::Result<()> {
    use nix::libc::{sock_filter, sock_fprog};
    use nix::sys::socket::{setsockopt, sockopt};
    // Classic BPF opcodes (linux/filter.h): BPF_LD (00) | BPF_W (00) |
    // BPF_ABS (20); BPF_ALU (04) | BPF_MOD (90) | BPF_K (00); BPF_RET (06)
    // | BPF_A (10).
    const LD_W_ABS: u16 = 0x20;
    const ALU_MOD_K: u16 = 0x94;
    const RET_A: u16 = 0x16;
    let count = u32::try_from(count).map_err(|_| io::Error::other("too many shards"))?;
    let mut program = [
        sock_filter { code: LD_W_ABS, jt: 0, jf: 0, k: 12 },
        sock_filter { code: ALU_MOD_K, jt: 0, jf: 0, k: count },
        sock_filter { code: RET_A, jt: 0, jf: 0, k: 0 },
    ];
    // The kernel copies the program during the call; `program` outlives it.
    let fprog = sock_fprog { len: program.len() as u16, filter: program.as_mut_ptr() };
    setsockopt(socket, sockopt::AttachReusePortCbpf, &fprog).map_err(io::Error::from)
}

#[cfg(all(unix, not(target_os = "linux")))]
fn attach_routing(_socket: &UdpSocket, _count: usize) -> io::Result<()> {
    Err(io::Error::other("routing datagrams by shard in the kernel needs Linux"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_server_socket_asks_for_larger_buffers_than_the_default() {
        let plain = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let default = socket2::SockRef::from(&plain).recv_buffer_size().unwrap();
        let (group, _) = super::bind("127.0.0.1:0".parse().unwrap(), 1, false).unwrap();
        let got = socket2::SockRef::from(&group[0]).recv_buffer_size().unwrap();
        // Where the system allows no more than its default, there is
        // nothing to gain; elsewhere the server gets more.
        let max = std::fs::read_to_string("/proc/sys/net/core/rmem_max").ok().and_then(|s| s.trim().parse().ok());
        if max.is_some_and(|m: usize| m > default) {
            assert!(got > default, "{got} B, default {default} B");
        }
    }
}
