//! SMTP protocol: command and reply codec, DATA handling, limits; shared by server and client.
//! `reply` (codes, enhanced status, wire form), `io` (line and DATA framing with the limits and
//! smuggling protection), `server` (a session driver any server plugs a handler into), `client`
//! (outbound sessions with pipelining and STARTTLS). Commands are parsed with smtp-proto.

pub mod client;
pub mod io;
pub mod reply;
pub mod server;

pub use reply::Reply;
pub use smtp_proto::{MailFrom, RcptTo, Request};

/// Parses one command line (without CRLF) into a request, or the reply that refuses it.
pub fn parse_command(line: &str) -> Result<Request<String>, Reply> {
    // The parser wants the CRLF back: a command line (at most 512 octets) gets it on the stack.
    let mut stack = [0u8; 512];
    let heap: Vec<u8>;
    let n = line.len();
    let bytes: &[u8] = if n + 2 <= stack.len() {
        stack[..n].copy_from_slice(line.as_bytes());
        stack[n..n + 2].copy_from_slice(b"\r\n");
        &stack[..n + 2]
    } else {
        heap = [line.as_bytes(), b"\r\n"].concat();
        &heap
    };
    let parsed = Request::parse(&mut bytes.iter()).map(|r| match r {
        Request::Ehlo { host } => Request::Ehlo {
            host: host.into_owned(),
        },
        Request::Lhlo { host } => Request::Lhlo {
            host: host.into_owned(),
        },
        Request::Helo { host } => Request::Helo {
            host: host.into_owned(),
        },
        Request::Mail { from } => Request::Mail {
            from: from.into_owned(),
        },
        Request::Rcpt { to } => Request::Rcpt {
            to: to.into_owned(),
        },
        Request::Bdat {
            chunk_size,
            is_last,
        } => Request::Bdat {
            chunk_size,
            is_last,
        },
        Request::Auth {
            mechanism,
            initial_response,
        } => Request::Auth {
            mechanism,
            initial_response: initial_response.into_owned(),
        },
        Request::Noop { value } => Request::Noop {
            value: value.into_owned(),
        },
        Request::Vrfy { value } => Request::Vrfy {
            value: value.into_owned(),
        },
        Request::Expn { value } => Request::Expn {
            value: value.into_owned(),
        },
        Request::Help { value } => Request::Help {
            value: value.into_owned(),
        },
        Request::Etrn { name } => Request::Etrn {
            name: name.into_owned(),
        },
        Request::Atrn { domains } => Request::Atrn {
            domains: domains.into_iter().map(|d| d.into_owned()).collect(),
        },
        Request::Burl { uri, is_last } => Request::Burl {
            uri: uri.into_owned(),
            is_last,
        },
        Request::StartTls => Request::StartTls,
        Request::Data => Request::Data,
        Request::Rset => Request::Rset,
        Request::Quit => Request::Quit,
    });
    if let Ok(Request::Rcpt { to }) = &parsed {
        if to.address.is_empty() {
            return Err(Reply::new(501, "5.1.3", "bad recipient address syntax"));
        }
    }
    parsed.map_err(|e| match e {
        smtp_proto::Error::UnknownCommand => Reply::new(500, "5.5.1", "command unrecognized"),
        smtp_proto::Error::InvalidSenderAddress => {
            Reply::new(501, "5.1.7", "bad sender address syntax")
        }
        smtp_proto::Error::InvalidRecipientAddress => {
            Reply::new(501, "5.1.3", "bad recipient address syntax")
        }
        smtp_proto::Error::SyntaxError { syntax } => {
            Reply::new(501, "5.5.4", format!("syntax: {syntax}"))
        }
        smtp_proto::Error::InvalidParameter { param } => {
            Reply::new(501, "5.5.4", format!("invalid parameter {param}"))
        }
        smtp_proto::Error::UnsupportedParameter { param } => {
            Reply::new(555, "5.5.4", format!("unsupported parameter {param}"))
        }
        _ => Reply::new(500, "5.5.2", "syntax error"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commands() {
        assert!(
            matches!(parse_command("EHLO mx.example.com"), Ok(Request::Ehlo { host }) if host == "mx.example.com")
        );
        match parse_command("MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME") {
            Ok(Request::Mail { from }) => {
                assert_eq!((from.address.as_str(), from.size), ("a@b.example", 1000))
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(parse_command("MAIL FROM:<>"), Ok(Request::Mail { from }) if from.address.is_empty())
        );
        assert!(
            matches!(parse_command("rcpt to:<U@X.example>"), Ok(Request::Rcpt { to }) if to.address == "U@X.example")
        );
        assert_eq!(
            parse_command("FOO bar")
                .map(|_| ())
                .map_err(|r| r.to_string()),
            Err("500 5.5.1 command unrecognized".into())
        );
        assert_eq!(
            parse_command("MAIL FROM:<a@b> XYZ=1")
                .map(|_| ())
                .map_err(|r| r.code),
            Err(555)
        );
        assert!(parse_command("RCPT TO:<>").is_err());
        // A line past the stack buffer is parsed the same way.
        let long = "x".repeat(600);
        let got = parse_command(&format!("NOOP {long}"));
        assert!(
            matches!(&got, Ok(Request::Noop { value }) if *value == long),
            "{got:?}"
        );
        let got = parse_command(&format!("RCPT TO:<{long}@b.example>"));
        assert_eq!(got.map(|_| ()).map_err(|r| r.code), Err(501));
    }

    proptest! {
        #[test]
        fn arbitrary_command_lines_never_panic(s in "\\PC{0,300}") {
            let _ = parse_command(&s);
            let _ = Reply::parse_line(&s);
            let _ = reply::ReplyParser::default().line(&s);
        }
    }
}
