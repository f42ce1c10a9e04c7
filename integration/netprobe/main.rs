//! `palisade-netprobe`: the traffic end points of Palisade's integration tests.
//!
//! `serve` answers TCP (a one-line banner naming the server, then close) and UDP (echo) on every
//! IPv4 and IPv6 address of the network namespace it runs in. `probe` tries several targets at
//! once and prints one JSON line per target with what happened:
//!
//! - `connected`: TCP connected and the banner arrived, or the UDP echo came back;
//! - `blocked`: nothing came back before the timeout (what a DROP rule looks like);
//! - `refused`: a TCP RST or ICMP port unreachable came back;
//! - `unreachable`: an ICMP host/network unreachable came back;
//! - `stalled`: TCP connected but no banner arrived;
//! - `error`: anything else (the detail says what).
//!
//! `send` fires UDP datagrams at one target from one socket and waits for nothing, for tests
//! that count packets (rule counters, flow logs, floods); at a TCP target it opens N
//! connections one after the other (each reads the banner) and prints how many per second.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const USAGE: &str = "usage:
  palisade-netprobe serve [--name NAME] [--tcp PORT,...] [--udp PORT,...] [--exit-on-stdin-eof]
  palisade-netprobe probe [--timeout-ms MS] [--udp-source-port-base PORT] TARGET...
  palisade-netprobe send --count N [--interval-us US] udp:IP:PORT|tcp:IP:PORT
TARGET is tcp:IP:PORT or udp:IP:PORT, IPv6 addresses in brackets (tcp:[fd50::1]:80).
`serve` prints `ready` on stdout once every port listens.";

const MAX_BANNER_BYTES: usize = 512;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("probe") => probe(&args[1..]),
        Some("send") => send(&args[1..]),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("palisade-netprobe: {message}");
            ExitCode::from(2)
        }
    }
}

fn parse_ports(text: &str) -> Result<Vec<u16>, String> {
    text.split(',')
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.parse::<u16>()
                .map_err(|e| format!("bad port {part:?}: {e}"))
        })
        .collect()
}

/// The value following a flag.
fn flag_value<'a>(
    args: &mut impl Iterator<Item = &'a String>,
    flag: &str,
) -> Result<&'a String, String> {
    args.next()
        .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
}

// ---------------------------------------------------------------------------------------------
// serve

fn serve(args: &[String]) -> Result<(), String> {
    let mut name = String::from("netprobe");
    let mut tcp_ports = Vec::new();
    let mut udp_ports = Vec::new();
    let mut exit_on_stdin_eof = false;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--name" => name = flag_value(&mut iter, arg)?.clone(),
            "--tcp" => tcp_ports.extend(parse_ports(flag_value(&mut iter, arg)?)?),
            "--udp" => udp_ports.extend(parse_ports(flag_value(&mut iter, arg)?)?),
            "--exit-on-stdin-eof" => exit_on_stdin_eof = true,
            other => return Err(format!("unknown serve argument {other:?}\n{USAGE}")),
        }
    }

    // Bind everything before reporting ready, so that a caller that waits for `ready` never
    // probes a port that is not listening yet.
    let mut tcp_listeners = Vec::new();
    for port in &tcp_ports {
        tcp_listeners.push((*port, bind_dual_stack(*port, TcpListener::bind)?));
    }
    let mut udp_sockets = Vec::new();
    for port in &udp_ports {
        udp_sockets.push((*port, bind_dual_stack(*port, UdpSocket::bind)?));
    }
    for (port, listener) in tcp_listeners {
        let banner = format!("netprobe {name} tcp/{port}\n");
        thread::spawn(move || serve_tcp(listener, banner));
    }
    for (_, socket) in udp_sockets {
        thread::spawn(move || serve_udp(socket));
    }

    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready").map_err(|e| format!("writing ready: {e}"))?;
    stdout.flush().map_err(|e| format!("writing ready: {e}"))?;

    if exit_on_stdin_eof {
        // The test harness holds our stdin open; when it exits, even when killed, the pipe
        // closes and the server goes with it instead of lingering in a deleted namespace.
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        loop {
            match stdin.read(&mut sink) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Ok(()),
            }
        }
    }
    loop {
        thread::park();
    }
}

/// Binds `[::]:port`, which also accepts IPv4 when the namespace allows dual-stack sockets (the
/// Linux default); falls back to `0.0.0.0:port` where IPv6 is unavailable.
fn bind_dual_stack<T>(
    port: u16,
    bind: impl Fn(SocketAddr) -> std::io::Result<T>,
) -> Result<T, String> {
    let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
    match bind(v6) {
        Ok(socket) => Ok(socket),
        Err(v6_error) => {
            let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
            bind(v4).map_err(|e| format!("cannot bind port {port}: [::]: {v6_error}; 0.0.0.0: {e}"))
        }
    }
}

fn serve_tcp(listener: TcpListener, banner: String) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let banner = banner.clone();
        thread::spawn(move || {
            let _ = stream.write_all(banner.as_bytes());
            let _ = stream.shutdown(std::net::Shutdown::Write);
        });
    }
}

fn serve_udp(socket: UdpSocket) {
    let mut buffer = [0u8; 2048];
    loop {
        match socket.recv_from(&mut buffer) {
            Ok((len, peer)) => {
                let _ = socket.send_to(&buffer[..len], peer);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // ICMP errors for earlier replies surface here on some kernels; keep serving.
            Err(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// probe

#[derive(Clone, Copy, Debug)]
enum Protocol {
    Tcp,
    Udp,
}

#[derive(Clone, Debug)]
struct Target {
    text: String,
    protocol: Protocol,
    address: SocketAddr,
}

fn parse_target(text: &str) -> Result<Target, String> {
    let (protocol, address) = text
        .split_once(':')
        .ok_or_else(|| format!("bad target {text:?}\n{USAGE}"))?;
    let protocol = match protocol {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        other => return Err(format!("bad protocol {other:?} in {text:?}\n{USAGE}")),
    };
    let address = address
        .parse::<SocketAddr>()
        .map_err(|e| format!("bad address in {text:?}: {e}\n{USAGE}"))?;
    Ok(Target {
        text: text.to_string(),
        protocol,
        address,
    })
}

/// Sends `--count` datagrams to one UDP target, `--interval-us` apart (default: back to back).
fn send(args: &[String]) -> Result<(), String> {
    let mut count: Option<u64> = None;
    let mut interval = Duration::ZERO;
    let mut target: Option<Target> = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--count" => {
                count = Some(
                    flag_value(&mut args, "--count")?
                        .parse()
                        .map_err(|e| format!("bad --count: {e}"))?,
                )
            }
            "--interval-us" => {
                let us: u64 = flag_value(&mut args, "--interval-us")?
                    .parse()
                    .map_err(|e| format!("bad --interval-us: {e}"))?;
                interval = Duration::from_micros(us);
            }
            text => target = Some(parse_target(text)?),
        }
    }
    let count = count.ok_or_else(|| format!("send needs --count\n{USAGE}"))?;
    let target = target.ok_or_else(|| format!("send needs a target\n{USAGE}"))?;
    if matches!(target.protocol, Protocol::Tcp) {
        return connect_many(count, &target);
    }
    let local: SocketAddr = match target.address {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).map_err(|e| format!("bind: {e}"))?;
    for i in 0..count {
        socket
            .send_to(format!("palisade {i}\n").as_bytes(), target.address)
            .map_err(|e| format!("send {i} to {}: {e}", target.text))?;
        if !interval.is_zero() {
            thread::sleep(interval);
        }
    }
    println!("sent {count}");
    Ok(())
}

/// Sequential connections, each until the banner arrived: the rate a policy path sustains.
fn connect_many(count: u64, target: &Target) -> Result<(), String> {
    let started = Instant::now();
    let mut banner = [0u8; MAX_BANNER_BYTES];
    for i in 0..count {
        let mut stream = TcpStream::connect_timeout(&target.address, Duration::from_secs(2))
            .map_err(|e| format!("connection {i} to {}: {e}", target.text))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| format!("connection {i}: {e}"))?;
        let read = stream
            .read(&mut banner)
            .map_err(|e| format!("connection {i} to {}: reading the banner: {e}", target.text))?;
        if read == 0 {
            return Err(format!("connection {i} to {}: no banner", target.text));
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{{\"connections\":{count},\"seconds\":{seconds:.4},\"per_second\":{:.1}}}",
        count as f64 / seconds.max(1e-9)
    );
    Ok(())
}

struct Outcome {
    verdict: &'static str,
    detail: String,
    elapsed: Duration,
}

fn probe(args: &[String]) -> Result<(), String> {
    let mut timeout = Duration::from_millis(300);
    let mut udp_source_port_base: Option<u16> = None;
    let mut targets = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--timeout-ms" => {
                let value = flag_value(&mut iter, arg)?;
                let ms = value
                    .parse::<u64>()
                    .map_err(|e| format!("bad --timeout-ms {value:?}: {e}"))?;
                timeout = Duration::from_millis(ms.max(1));
            }
            "--udp-source-port-base" => {
                let value = flag_value(&mut iter, arg)?;
                let port = value
                    .parse::<u16>()
                    .map_err(|e| format!("bad --udp-source-port-base {value:?}: {e}"))?;
                udp_source_port_base = Some(port);
            }
            other => targets.push(parse_target(other)?),
        }
    }

    let token_base = format!(
        "netprobe {} {}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let handles: Vec<_> = targets
        .iter()
        .enumerate()
        .map(|(index, target)| {
            let target = target.clone();
            // A fixed, distinct source port per UDP target: a port the kernel picked at random
            // could repeat the 5-tuple of an earlier, allowed probe whose conntrack entry is
            // still alive, and that entry would let the datagram through whatever the policy.
            let source_port = udp_source_port_base
                .and_then(|base| u16::try_from(index).ok().and_then(|i| base.checked_add(i)));
            let token = format!("{token_base} {index}");
            thread::spawn(move || match target.protocol {
                Protocol::Tcp => probe_tcp(target.address, timeout),
                Protocol::Udp => probe_udp(target.address, source_port, &token, timeout),
            })
        })
        .collect();

    let mut stdout = std::io::stdout().lock();
    for (target, handle) in targets.iter().zip(handles) {
        let outcome = handle.join().unwrap_or_else(|_| Outcome {
            verdict: "error",
            detail: "probe thread panicked".to_string(),
            elapsed: Duration::ZERO,
        });
        let line = serde_json::json!({
            "target": target.text,
            "verdict": outcome.verdict,
            "detail": outcome.detail,
            "ms": outcome.elapsed.as_millis() as u64,
        });
        writeln!(stdout, "{line}").map_err(|e| format!("writing result: {e}"))?;
    }
    stdout.flush().map_err(|e| format!("writing result: {e}"))
}

fn verdict_of_error(error: &std::io::Error) -> &'static str {
    match error.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "blocked",
        ErrorKind::ConnectionRefused => "refused",
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => "unreachable",
        _ => "error",
    }
}

fn probe_tcp(address: SocketAddr, timeout: Duration) -> Outcome {
    let start = Instant::now();
    let outcome = |verdict, detail: String| Outcome {
        verdict,
        detail,
        elapsed: start.elapsed(),
    };
    let mut stream = match TcpStream::connect_timeout(&address, timeout) {
        Ok(stream) => stream,
        Err(e) => return outcome(verdict_of_error(&e), e.to_string()),
    };
    // The banner gets its own timeout: the handshake proved the path, the banner proves that
    // data flows both ways on the established connection.
    if let Err(e) = stream.set_read_timeout(Some(timeout)) {
        return outcome("error", format!("set_read_timeout: {e}"));
    }
    let mut banner = Vec::new();
    let mut buffer = [0u8; 128];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                banner.extend_from_slice(&buffer[..n]);
                if banner.len() >= MAX_BANNER_BYTES || banner.ends_with(b"\n") {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                if banner.is_empty() {
                    let verdict = match verdict_of_error(&e) {
                        "blocked" => "stalled",
                        other => other,
                    };
                    return outcome(verdict, format!("connected, then: {e}"));
                }
                break;
            }
        }
    }
    if banner.is_empty() {
        return outcome(
            "stalled",
            "connected, but the server sent nothing".to_string(),
        );
    }
    outcome(
        "connected",
        String::from_utf8_lossy(&banner).trim_end().to_string(),
    )
}

fn probe_udp(
    address: SocketAddr,
    source_port: Option<u16>,
    token: &str,
    timeout: Duration,
) -> Outcome {
    let start = Instant::now();
    let outcome = |verdict, detail: String| Outcome {
        verdict,
        detail,
        elapsed: start.elapsed(),
    };
    let unspecified: IpAddr = match address {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = match source_port
        .and_then(|port| UdpSocket::bind(SocketAddr::new(unspecified, port)).ok())
    {
        Some(socket) => socket,
        None => match UdpSocket::bind(SocketAddr::new(unspecified, 0)) {
            Ok(socket) => socket,
            Err(e) => return outcome("error", format!("bind: {e}")),
        },
    };
    // Connecting makes the kernel report an ICMP port unreachable as ECONNREFUSED on recv.
    if let Err(e) = socket.connect(address) {
        return outcome(verdict_of_error(&e), format!("connect: {e}"));
    }
    if let Err(e) = socket.set_read_timeout(Some(timeout)) {
        return outcome("error", format!("set_read_timeout: {e}"));
    }
    if let Err(e) = socket.send(token.as_bytes()) {
        return outcome(verdict_of_error(&e), format!("send: {e}"));
    }
    let mut buffer = [0u8; 2048];
    loop {
        match socket.recv(&mut buffer) {
            Ok(n) if &buffer[..n] == token.as_bytes() => {
                return outcome("connected", "echo received".to_string())
            }
            Ok(n) => {
                return outcome(
                    "error",
                    format!(
                        "unexpected reply {:?}",
                        String::from_utf8_lossy(&buffer[..n])
                    ),
                )
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return outcome(verdict_of_error(&e), e.to_string()),
        }
    }
}
