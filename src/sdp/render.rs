//! The SDP Wowza ingests for one reservation (docs/api.md, "The SDP of a
//! reservation"), pure: what is known of its audio stream and one video
//! stream in, the RFC 8866 text out, or what is still missing.

use crate::group::Role;
use std::fmt::Write;
use std::net::IpAddr;

/// Codec parameters given rather than learned: from the reservation's `media`
/// or, for audio, the configuration's `[sdp]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Given<'a> {
    /// `a=rtpmap` after the payload type, e.g. `MPEG4-GENERIC/48000/2`.
    pub rtpmap: &'a str,
    /// `a=fmtp` after the payload type; none when empty.
    pub fmtp: Option<&'a str>,
}

/// H.264 parameters learned from the stream (RFC 6184 §8.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct H264<'a> {
    /// Bytes 1–3 of the SPS, six hex digits.
    pub profile_level_id: &'a str,
    /// `base64(SPS),base64(PPS)`.
    pub sprop_parameter_sets: &'a str,
}

/// What is known of one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stream<'a> {
    /// Its role.
    pub role: Role,
    /// The relay's port it arrives on (named when something is missing).
    pub relay_port: u16,
    /// Wowza's media port (the `m=` line).
    pub port: u16,
    /// Wowza's control port (`a=rtcp`).
    pub rtcp_port: u16,
    /// The payload type seen on the wire, once a packet has been.
    pub payload_type: Option<u8>,
    /// Parameters given for it, which win over anything learned.
    pub given: Option<Given<'a>>,
    /// For video: the learned H.264 parameters, or what is still missing of
    /// them (e.g. "no SPS seen yet").
    pub h264: Result<H264<'a>, &'a str>,
}

/// The session: who it is for and where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session<'a> {
    /// The reservation (`s=`).
    pub event_id: &'a str,
    /// Wowza's address (`c=`, and the origin's).
    pub address: IpAddr,
    /// `o=` session version: changes whenever the description does.
    pub version: u64,
}

/// Why there is no SDP yet: the stream, the relay port it arrives on, and
/// what has not been seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotReady {
    /// The stream.
    pub role: Role,
    /// The relay's port for it.
    pub port: u16,
    /// What is missing.
    pub missing: String,
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (relay port {}): {}",
            self.role.as_str(),
            self.port,
            self.missing
        )
    }
}

/// The origin's user name: how the relay knows its own files in a folder it
/// shares with others.
pub const ORIGIN_USER: &str = "rtp-relay";

/// Checks an `a=rtpmap` value as given (configuration, reservation):
/// `ENCODING/CLOCK` or `ENCODING/CLOCK/CHANNELS` (RFC 8866 §6.6).
pub fn check_rtpmap(rtpmap: &str) -> Result<(), String> {
    let parts: Vec<&str> = rtpmap.split('/').collect();
    let encoding_ok = parts[0]
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b))
        && !parts[0].is_empty();
    let numbers_ok = parts[1..]
        .iter()
        .all(|n| !n.is_empty() && n.len() <= 9 && n.bytes().all(|b| b.is_ascii_digit()));
    if (2..=3).contains(&parts.len()) && encoding_ok && numbers_ok {
        Ok(())
    } else {
        Err(format!(
            "{rtpmap:?} is not an rtpmap: write ENCODING/CLOCK_RATE[/CHANNELS], e.g. MPEG4-GENERIC/48000/2"
        ))
    }
}

/// Checks an `a=fmtp` value as given: one line of printable ASCII (it is
/// written into the SDP as it is), at most 1000 characters; empty is none.
pub fn check_fmtp(fmtp: &str) -> Result<(), String> {
    if fmtp.len() > 1000 {
        return Err(format!("is {} characters long: at most 1000", fmtp.len()));
    }
    match fmtp.chars().find(|c| !(' '..='~').contains(c)) {
        Some(c) => Err(format!(
            "contains {c:?}: write the parameters on one line of printable ASCII, e.g. streamtype=5;mode=AAC-hbr"
        )),
        None => Ok(()),
    }
}

/// The SDP of `session` with `audio` and `video`, CRLF lines; or the first
/// thing missing (audio first).
pub fn render(session: &Session, audio: &Stream, video: &Stream) -> Result<String, NotReady> {
    let audio_line = media_line(audio, "audio")?;
    let video_line = media_line(video, "video")?;
    let family = match session.address {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    };
    let mut sdp = String::with_capacity(512);
    let mut line = |l: std::fmt::Arguments| {
        let _ = sdp.write_fmt(l);
        sdp.push_str("\r\n");
    };
    line(format_args!("v=0"));
    line(format_args!(
        "o={ORIGIN_USER} {} {} IN {family} {}",
        session_id(session.event_id),
        session.version,
        session.address
    ));
    line(format_args!("s={}", session.event_id));
    line(format_args!("c=IN {family} {}", session.address));
    line(format_args!("t=0 0"));
    for m in [audio_line, video_line] {
        line(format_args!("m={} {} RTP/AVP {}", m.kind, m.port, m.pt));
        line(format_args!("a=rtpmap:{} {}", m.pt, m.rtpmap));
        if let Some(fmtp) = m.fmtp.as_deref().filter(|f| !f.is_empty()) {
            line(format_args!("a=fmtp:{} {fmtp}", m.pt));
        }
        line(format_args!("a=rtcp:{}", m.rtcp_port));
    }
    Ok(sdp)
}

struct MediaLine {
    kind: &'static str,
    port: u16,
    rtcp_port: u16,
    pt: u8,
    rtpmap: String,
    fmtp: Option<String>,
}

fn media_line(s: &Stream, kind: &'static str) -> Result<MediaLine, NotReady> {
    let missing = |what: &str| NotReady {
        role: s.role,
        port: s.relay_port,
        missing: what.to_string(),
    };
    let pt = s
        .payload_type
        .ok_or_else(|| missing("no RTP packet seen yet"))?;
    let (rtpmap, fmtp) = match (&s.given, &s.h264) {
        (Some(g), _) => (g.rtpmap.to_string(), g.fmtp.map(str::to_string)),
        (None, Ok(h)) if kind == "video" => (
            "H264/90000".to_string(),
            Some(format!(
                "packetization-mode=1;profile-level-id={};sprop-parameter-sets={}",
                h.profile_level_id, h.sprop_parameter_sets
            )),
        ),
        (None, Err(what)) if kind == "video" => return Err(missing(what)),
        (None, _) => {
            return Err(missing(
                "no codec parameters: give them in the reservation's media or in [sdp]",
            ));
        }
    };
    Ok(MediaLine {
        kind,
        port: s.port,
        rtcp_port: s.rtcp_port,
        pt,
        rtpmap,
        fmtp,
    })
}

/// A session id that stays the same for a reservation (FNV-1a of its name):
/// with the version, it tells Wowza a description changed rather than a new
/// one began.
fn session_id(event_id: &str) -> u32 {
    event_id.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AAC: Given = Given {
        rtpmap: "MPEG4-GENERIC/48000/2",
        fmtp: Some(
            "streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config=1190",
        ),
    };

    fn audio() -> Stream<'static> {
        Stream {
            role: Role::PrimaryAudio,
            relay_port: 65528,
            port: 49160,
            rtcp_port: 49161,
            payload_type: Some(97),
            given: Some(AAC),
            h264: Err("not video"),
        }
    }

    fn video() -> Stream<'static> {
        Stream {
            role: Role::PrimaryVideo,
            relay_port: 65532,
            port: 49164,
            rtcp_port: 49165,
            payload_type: Some(96),
            given: None,
            h264: Ok(H264 {
                profile_level_id: "42c01e",
                sprop_parameter_sets: "Z0LAHtkDxWhAAAADAEAAAAwDxYuS,aMuMsg==",
            }),
        }
    }

    fn session() -> Session<'static> {
        Session {
            event_id: "bio101-2026-11-24",
            address: IpAddr::from([198, 51, 100, 5]),
            version: 7,
        }
    }

    #[test]
    fn the_description_has_every_line_wowza_needs() {
        let sdp = render(&session(), &audio(), &video()).unwrap();
        let id = session_id("bio101-2026-11-24");
        assert_eq!(
            sdp,
            format!(
                "v=0\r\n\
                 o=rtp-relay {id} 7 IN IP4 198.51.100.5\r\n\
                 s=bio101-2026-11-24\r\n\
                 c=IN IP4 198.51.100.5\r\n\
                 t=0 0\r\n\
                 m=audio 49160 RTP/AVP 97\r\n\
                 a=rtpmap:97 MPEG4-GENERIC/48000/2\r\n\
                 a=fmtp:97 streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config=1190\r\n\
                 a=rtcp:49161\r\n\
                 m=video 49164 RTP/AVP 96\r\n\
                 a=rtpmap:96 H264/90000\r\n\
                 a=fmtp:96 packetization-mode=1;profile-level-id=42c01e;sprop-parameter-sets=Z0LAHtkDxWhAAAADAEAAAAwDxYuS,aMuMsg==\r\n\
                 a=rtcp:49165\r\n"
            )
        );
        // A well-kept SDP parser reads it back.
        let parsed = sdp::SessionDescription::unmarshal(&mut std::io::Cursor::new(&sdp)).unwrap();
        assert_eq!(parsed.session_name, "bio101-2026-11-24");
        assert_eq!(parsed.media_descriptions.len(), 2);
        let v = &parsed.media_descriptions[1];
        assert_eq!(v.media_name.media, "video");
        assert_eq!(v.media_name.port.value, 49164);
        assert_eq!(v.media_name.formats, ["96"]);
        assert_eq!(
            v.attribute("rtpmap").flatten(),
            Some("96 H264/90000"),
            "{sdp}"
        );
    }

    #[test]
    fn ipv6_and_given_video_parameters() {
        let mut v = video();
        v.given = Some(Given {
            rtpmap: "H264/90000",
            fmtp: Some("packetization-mode=1"),
        });
        v.h264 = Err("no SPS seen yet");
        let s = Session {
            address: "2001:db8::5".parse().unwrap(),
            ..session()
        };
        let sdp = render(&s, &audio(), &v).unwrap();
        assert!(sdp.contains("\r\nc=IN IP6 2001:db8::5\r\n"), "{sdp}");
        assert!(
            sdp.contains("\r\na=fmtp:96 packetization-mode=1\r\n"),
            "{sdp}"
        );
        // An empty fmtp is left out.
        let mut a = audio();
        a.given = Some(Given {
            rtpmap: "L16/48000/2",
            fmtp: Some(""),
        });
        let sdp = render(&session(), &a, &video()).unwrap();
        assert!(!sdp.contains("a=fmtp:97"), "{sdp}");
    }

    #[test]
    fn what_is_missing_is_named_with_the_stream_and_port() {
        let mut a = audio();
        a.payload_type = None;
        let mut v = video();
        v.h264 = Err("no PPS seen yet");
        let e = render(&session(), &a, &v).unwrap_err();
        assert_eq!(
            e.to_string(),
            "primary_audio (relay port 65528): no RTP packet seen yet"
        );
        let e = render(&session(), &audio(), &v).unwrap_err();
        assert_eq!(
            e.to_string(),
            "primary_video (relay port 65532): no PPS seen yet"
        );
        let mut a = audio();
        a.given = None;
        let e = render(&session(), &a, &video()).unwrap_err();
        assert!(e.missing.starts_with("no codec parameters"), "{e}");
    }

    #[test]
    fn given_parameters_are_checked_before_they_reach_a_description() {
        for ok in [
            "MPEG4-GENERIC/48000/2",
            "H264/90000",
            "L16/44100/1",
            "opus/48000/2",
        ] {
            assert_eq!(check_rtpmap(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "H264",
            "H264/",
            "/90000",
            "H264/90k",
            "A/1/2/3",
            "a b/1",
            "x/1\r\na=evil",
        ] {
            let e = check_rtpmap(bad).unwrap_err();
            assert!(e.contains("ENCODING/CLOCK_RATE"), "{bad}: {e}");
        }
        assert_eq!(check_fmtp(""), Ok(()));
        assert_eq!(check_fmtp("streamtype=5; mode=AAC-hbr"), Ok(()));
        assert!(check_fmtp("a=1\r\na=evil").unwrap_err().contains("'\\r'"));
        assert!(check_fmtp("é").unwrap_err().contains("printable ASCII"));
        assert!(check_fmtp(&"x".repeat(1001)).unwrap_err().contains("1001"));
    }

    #[test]
    fn the_session_id_stays_and_differs_between_reservations() {
        assert_eq!(session_id("a"), session_id("a"));
        assert_ne!(session_id("a"), session_id("b"));
        assert_eq!(session_id(""), 0x811c_9dc5);
    }
}
