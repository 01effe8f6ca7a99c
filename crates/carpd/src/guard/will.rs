//! The last will: what a dead daemon's guard (or `carpd stop-post`) undoes
//! and sends, and its two encodings: frames on the guard's socket and a
//! JSON file in the state directory.
//!
//! The daemon builds the will; nothing here knows CARP. An advertisement is
//! kept as the final bytes the daemon would send (HMAC or VRRP checksum
//! included) with the way it would send them, so the guard sends exactly
//! what a planned stop sends.

use std::fmt::Write as _;
use std::io::{self, Read};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The largest frame accepted (a will of a few hundred vhosts is tens of KiB).
pub const MAX_FRAME: usize = 4 << 20;

/// Frame kinds on the guard socket.
const KIND_WILL: u8 = b'W';
const KIND_CLEAN: u8 = b'X';

/// Everything to undo and send when the daemon dies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Will {
    /// The daemon that wrote it (for `stop-post`: a running writer is left alone).
    pub pid: u32,
    /// Its start time in clock ticks after boot (`/proc/PID/stat` field 22),
    /// so a reused pid is not taken for the writer.
    pub started: u64,
    /// The boot the will belongs to; addresses and links do not survive a reboot.
    pub boot_id: String,
    /// The network namespace (inode of `/proc/self/ns/net`).
    pub netns: u64,
    /// Virtual addresses this host holds: removed first.
    pub addresses: Vec<WillAddress>,
    /// Macvlans the daemon created: deleted next.
    pub macvlans: Vec<WillLink>,
    /// Bow-out advertisements of the vhosts MASTER here: sent last.
    pub adverts: Vec<WillAdvert>,
}

/// One address on one interface.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WillAddress {
    /// The interface holding it; only removed while `ifname` still has this index.
    pub ifindex: u32,
    /// Its name.
    pub ifname: String,
    /// The address.
    pub addr: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
}

/// A link by index and name (deleted only while the name still matches).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WillLink {
    /// Interface index.
    pub ifindex: u32,
    /// Interface name.
    pub name: String,
}

/// One bow-out advertisement, ready to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WillAdvert {
    /// The vhid (for the log).
    pub vhid: u8,
    /// The carpdev it leaves from.
    pub carpdev: WillLink,
    /// The group or a unicast peer.
    pub dst: IpAddr,
    /// How it is sent.
    pub via: Via,
    /// The CARP or VRRP header and payload, as sent.
    #[serde(with = "hex")]
    pub bytes: Vec<u8>,
}

/// How an advertisement leaves, as `daemon::perform` sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// A raw protocol-112 socket on the carpdev, from `src` (`None`: the kernel's choice).
    Socket {
        /// Source address.
        src: Option<IpAddr>,
    },
    /// An Ethernet frame from the virtual MAC `mac` (multicast to the group).
    Frame {
        /// Source MAC.
        mac: [u8; 6],
        /// Source address in the IP header.
        src: IpAddr,
    },
}

/// One message from the daemon to its guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The will as it stands now (replaces the previous one).
    Will(Will),
    /// The daemon stopped in order: exit without doing anything.
    Clean,
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Reading the socket failed.
    #[error("read")]
    Io(#[from] io::Error),
    /// The length prefix is 0 or above [`MAX_FRAME`]: the stream cannot be followed.
    #[error("frame length {0} out of range")]
    Length(usize),
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// A complete frame of an unknown kind or with a will that does not parse
    /// (the stream stays in step: the next frame can be read).
    #[error("bad frame: {0}")]
    Bad(String),
}

impl Message {
    /// Encode as a frame: a 4-byte big-endian length, a kind byte, the JSON will.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, body) = match self {
            Message::Will(w) => (KIND_WILL, serde_json::to_vec(w).unwrap_or_default()),
            Message::Clean => (KIND_CLEAN, Vec::new()),
        };
        let len = u32::try_from(body.len() + 1).unwrap_or(u32::MAX);
        let mut frame = Vec::with_capacity(body.len() + 5);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.push(kind);
        frame.extend_from_slice(&body);
        frame
    }

    /// Read the next frame from `r`; `Ok(None)` at the end of the stream
    /// between frames.
    pub fn read(r: &mut impl Read) -> Result<Option<Message>, FrameError> {
        let mut len = [0u8; 4];
        match read_full(r, &mut len)? {
            0 => return Ok(None),
            4 => {}
            _ => return Err(FrameError::Truncated),
        }
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > MAX_FRAME {
            return Err(FrameError::Length(len));
        }
        let mut body = vec![0u8; len];
        if read_full(r, &mut body)? != len {
            return Err(FrameError::Truncated);
        }
        match body.split_first() {
            Some((&KIND_CLEAN, _)) => Ok(Some(Message::Clean)),
            Some((&KIND_WILL, will)) => serde_json::from_slice(will)
                .map(|w| Some(Message::Will(w)))
                .map_err(|e| FrameError::Bad(e.to_string())),
            Some((k, _)) => Err(FrameError::Bad(format!("unknown kind {k:#04x}"))),
            None => Err(FrameError::Length(0)),
        }
    }
}

impl FrameError {
    /// Whether reading can go on with the next frame.
    pub fn in_step(&self) -> bool {
        matches!(self, FrameError::Bad(_))
    }
}

/// Read until `buf` is full or the stream ends; return the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl Will {
    /// The file form (pretty JSON, for an operator reading it).
    pub fn to_file(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Parse the file form.
    pub fn from_file(bytes: &[u8]) -> Result<Will, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty() && self.macvlans.is_empty() && self.adverts.is_empty()
    }
}

/// Bytes as a hex string in JSON.
mod hex {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let mut text = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            let _ = write!(text, "{b:02x}");
        }
        s.serialize_str(&text)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        decode(&text)
            .ok_or_else(|| serde::de::Error::custom("expected an even number of hex digits"))
    }

    pub(super) fn decode(text: &str) -> Option<Vec<u8>> {
        if !text.len().is_multiple_of(2) || !text.is_ascii() {
            return None;
        }
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
            .collect()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    pub(crate) fn sample() -> Will {
        Will {
            pid: 4242,
            started: 99,
            boot_id: "b".into(),
            netns: 7,
            addresses: vec![WillAddress {
                ifindex: 12,
                ifname: "carp3v1".into(),
                addr: "192.0.2.50".parse().unwrap(),
                prefix_len: 24,
            }],
            macvlans: vec![WillLink {
                ifindex: 12,
                name: "carp3v1".into(),
            }],
            adverts: vec![
                WillAdvert {
                    vhid: 1,
                    carpdev: WillLink {
                        ifindex: 3,
                        name: "eth0".into(),
                    },
                    dst: "224.0.0.18".parse().unwrap(),
                    via: Via::Frame {
                        mac: [0, 0, 0x5e, 0, 1, 1],
                        src: "192.0.2.1".parse().unwrap(),
                    },
                    bytes: vec![0x21, 0x01, 0xff, 0x07, 0x00, 0xab],
                },
                WillAdvert {
                    vhid: 1,
                    carpdev: WillLink {
                        ifindex: 3,
                        name: "eth0".into(),
                    },
                    dst: "198.51.100.2".parse().unwrap(),
                    via: Via::Socket { src: None },
                    bytes: vec![0x31],
                },
            ],
        }
    }

    #[test]
    fn frames_round_trip_and_end_cleanly() {
        let mut stream = Message::Will(sample()).encode();
        stream.extend(Message::Will(Will::default()).encode());
        stream.extend(Message::Clean.encode());
        let mut r = &stream[..];
        assert_eq!(
            Message::read(&mut r).unwrap(),
            Some(Message::Will(sample()))
        );
        assert_eq!(
            Message::read(&mut r).unwrap(),
            Some(Message::Will(Will::default()))
        );
        assert_eq!(Message::read(&mut r).unwrap(), Some(Message::Clean));
        assert_eq!(Message::read(&mut r).unwrap(), None, "EOF between frames");
    }

    #[test]
    fn bad_frames_are_errors_and_a_bad_will_keeps_the_stream_in_step() {
        let whole = Message::Will(sample()).encode();
        let err = Message::read(&mut &whole[..whole.len() - 1]).unwrap_err();
        assert!(matches!(err, FrameError::Truncated), "{err}");
        assert!(matches!(
            Message::read(&mut &whole[..2]).unwrap_err(),
            FrameError::Truncated
        ));
        let huge = (MAX_FRAME as u32 + 1).to_be_bytes();
        assert!(matches!(
            Message::read(&mut &huge[..]).unwrap_err(),
            FrameError::Length(_)
        ));
        assert!(matches!(
            Message::read(&mut &[0u8, 0, 0, 0][..]).unwrap_err(),
            FrameError::Length(0)
        ));
        // A garbled will, then a good frame: the good one is still read.
        let mut stream = vec![0, 0, 0, 3, b'W', b'{', b'x'];
        stream.extend(Message::Clean.encode());
        let mut r = &stream[..];
        let err = Message::read(&mut r).unwrap_err();
        assert!(err.in_step(), "{err}");
        assert_eq!(Message::read(&mut r).unwrap(), Some(Message::Clean));
        let unknown = [0, 0, 0, 1, b'?'];
        assert!(Message::read(&mut &unknown[..]).unwrap_err().in_step());
    }

    #[test]
    fn the_file_form_round_trips_and_keeps_bytes_as_hex() {
        let text = sample().to_file();
        let s = String::from_utf8(text.clone()).unwrap();
        assert!(s.contains("\"bytes\": \"2101ff0700ab\""), "{s}");
        assert_eq!(Will::from_file(&text).unwrap(), sample());
        let odd = s.replace("2101ff0700ab", "2101f");
        assert!(Will::from_file(odd.as_bytes()).is_err());
        let not_hex = s.replace("2101ff0700ab", "zz01ff0700ab");
        assert!(Will::from_file(not_hex.as_bytes()).is_err());
        assert!(Will::from_file(b"{ not json").is_err());
        assert_eq!(hex::decode("a\u{e9}b"), None, "multi-byte text is no hex");
    }
}
