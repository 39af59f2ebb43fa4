//! Small hand-written bounces, one per format family the parser reads (after each product's
//! documented or commonly seen layout; no corpus message is copied here).

use super::*;

fn run(raw: &str) -> BounceReport {
    parse(raw.as_bytes(), &Classifier::default()).expect("parses")
}

fn one(r: &BounceReport) -> &FailedRecipient {
    assert_eq!(r.recipients.len(), 1, "{r:#?}");
    &r.recipients[0]
}

const HEAD: &str = "From: MAILER-DAEMON@mta.example\nTo: sender@origin.example\n";

#[test]
fn dragonfly_reply_and_command() {
    let r = run(&format!(
        "{HEAD}Subject: Mail delivery failed\n\nThis is the DragonFly Mail Agent v0.13 at mta.example.\n\n\
         There was an error delivering your mail to <bob@dest.example>.\n\n\
         mx.dest.example [192.0.2.9] did not like our RCPT TO:\n\
         550 5.1.1 <bob@dest.example>: Recipient address rejected: User unknown\n\n\
         Original message follows.\n\nTo: <bob@dest.example>\n"
    ));
    assert_eq!(r.format, Some(BounceFormat::Dragonfly));
    let f = one(&r);
    assert_eq!(f.recipient, "bob@dest.example");
    assert_eq!(f.status, "5.1.1");
    assert_eq!(f.command.as_deref(), Some("RCPT"));
    assert!(f.diagnostic.starts_with("550 5.1.1"), "{}", f.diagnostic);
    assert_eq!(f.remote_mta.as_deref(), Some("mx.dest.example"));
}

#[test]
fn dragonfly_own_reason() {
    let r = run(&format!(
        "{HEAD}Subject: Mail delivery failed\n\nThis is the DragonFly Mail Agent v0.13 at mta.example.\n\n\
         There was an error delivering your mail to <amy@gone.example>.\n\n\
         DNS lookup failure: host gone.example not found\n\nMessage headers follow.\n"
    ));
    let f = one(&r);
    assert_eq!(
        f.diagnostic,
        "DNS lookup failure: host gone.example not found"
    );
}

#[test]
fn amazon_ses_bounce_through_sns() {
    let inner = r#"{\"notificationType\":\"Bounce\",\"bounce\":{\"bounceType\":\"Permanent\",\"bouncedRecipients\":[{\"emailAddress\":\"carl@dest.example\",\"action\":\"failed\",\"status\":\"5.1.1\",\"diagnosticCode\":\"smtp; 550 5.1.1 user unknown\"}],\"reportingMTA\":\"dsn; a1.ses.example\"}}"#;
    let r = run(&format!(
        "From: no-reply@sns.example\nTo: ops@origin.example\nSubject: AWS Notification Message\n\n\
         {{\n  \"Type\" : \"Notification\",\n  \"Message\" : \"{inner}\"\n}}\n"
    ));
    assert_eq!(r.format, Some(BounceFormat::AmazonSes));
    let f = one(&r);
    assert_eq!(f.recipient, "carl@dest.example");
    assert_eq!(f.status, "5.1.1");
    assert_eq!(f.remote_mta.as_deref(), Some("a1.ses.example"));
}

#[test]
fn amazon_ses_delivery_is_not_a_bounce() {
    let r = run(
        "From: no-reply@sns.example\nSubject: AWS Notification Message\n\n\
         {\"notificationType\":\"Delivery\",\"delivery\":{\"recipients\":[\"d@dest.example\"]}}\n",
    );
    assert_eq!(r.format, Some(BounceFormat::AmazonSes));
    assert!(r.recipients.is_empty());
    assert!(r
        .reason
        .as_deref()
        .unwrap_or("")
        .contains("no bounced recipient"));
}

#[test]
fn dsn_fields_in_a_text_part() {
    let r = run(&format!(
        "{HEAD}Subject: Delivery Status Notification (Failure)\n\n\
         An error occurred while trying to deliver the mail to the following recipients:\ndee@dest.example\n\n\
         Reporting-MTA: dns; out.mta.example\n\nAction: failed\nFinal-Recipient: rfc822; dee@dest.example\n\
         Diagnostic-Code: smtp; 550 5.2.2 mailbox full\nStatus: 5.2.2\n"
    ));
    assert_eq!(r.format, Some(BounceFormat::DsnText));
    let f = one(&r);
    assert_eq!(
        (f.recipient.as_str(), f.status.as_str()),
        ("dee@dest.example", "5.2.2")
    );
}

#[test]
fn dsn_without_blank_lines_bad_final_recipient_and_expired() {
    let r = run(&format!(
        "{HEAD}Subject: failure\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n\
         --b\nContent-Type: text/plain\n\nSee below.\n\
         --b\nContent-Type: message/delivery-status\n\n\
         Reporting-MTA: dns; mta.example\n\n\
         Final-Recipient: rfc822; @relay.example:eve@server\nOriginal-Recipient: rfc822; eve@dest.example\n\
         Action: failed\nStatus: 5.1.1\n\
         Final-Recipient: rfc822; \"fay\"@dest.example\nAction: expired\nStatus: 4.4.7\n\
         Diagnostic-Code: smtp; 421 timed out\n--b--\n"
    ));
    let got: Vec<&str> = r.recipients.iter().map(|f| f.recipient.as_str()).collect();
    assert_eq!(got, ["eve@dest.example", "fay@dest.example"]);
    assert_eq!(r.recipients[1].status, "4.4.7");
}

#[test]
fn exim_delay_warning() {
    let r = run(&format!(
        "{HEAD}Subject: Warning: message 1abc delayed 24 hours\n\n\
         This message was created automatically by mail delivery software.\n\
         A message that you sent has not yet been delivered to one or more of its\n\
         recipients after more than 24 hours on the queue on mta.example.\n\n\
         The address to which the message has not yet been delivered is:\n\n  gil@dest.example\n\
         \x20   host mx.dest.example [192.0.2.3]\n\
         \x20   Delay reason: SMTP error from remote mail server after MAIL FROM:<sender@origin.example>:\n\
         \x20   450 4.7.1 try again later\n\n\
         No action is required on your part.\n"
    ));
    let f = one(&r);
    assert_eq!(f.action, "delayed");
    assert_eq!(f.command.as_deref(), Some("MAIL"));
    assert_eq!(f.diagnostic, "450 4.7.1 try again later");
}

#[test]
fn sendmail_v5_transcript() {
    let r = run(&format!(
        "{HEAD}Subject: Returned mail: User unknown\n\n   ----- Transcript of session follows -----\n\
         While talking to mx.dest.example:\n>>> RCPT To:<hal@dest.example>\n<<< 550 No such user here\n\
         550 <hal@dest.example>... User unknown\n\n   ----- Unsent message follows -----\nTo: hal@dest.example\n"
    ));
    let f = one(&r);
    assert_eq!(f.recipient, "hal@dest.example");
    assert_eq!(f.command.as_deref(), Some("RCPT"));
    assert_eq!(f.diagnostic, "550 No such user here");
}

#[test]
fn generic_recipient_lines() {
    // "addr: reason" lines (OpenSMTPD-like) and "reason: addr" lines (IMail-like).
    let r = run(&format!(
        "{HEAD}Subject: Delivery status notification: error\n\n\
         Hi!\n\nThis is the MAILER-DAEMON.\n\n\
         ivy@dest.example: 550 5.2.2 <ivy@dest.example>... Mailbox Full\n\
         jon@dest.example: Domain does not exist\n\n    Below is a copy of the original message:\n"
    ));
    let got: Vec<(&str, &str)> = r
        .recipients
        .iter()
        .map(|f| (f.recipient.as_str(), f.status.as_str()))
        .collect();
    assert_eq!(
        got,
        [("ivy@dest.example", "5.2.2"), ("jon@dest.example", "5.0.0")]
    );
    let r = run(
        "From: postmaster@dest.example\nTo: sender@origin.example\nSubject: Undeliverable Mail\n\n\
         Unknown user: kim@dest.example\n\nOriginal message follows.\n\nTo: kim@dest.example\n",
    );
    assert_eq!(one(&r).recipient, "kim@dest.example");
    assert_eq!(r.format, Some(BounceFormat::Generic));
}

#[test]
fn x_failed_recipients_header() {
    let r = run("From: mailer-daemon@groups.example\nTo: sender@origin.example\n\
         X-Failed-Recipients: list@groups.example\nSubject: Delivery Status Notification (Failure)\n\n\
         Hello sender@origin.example,\nThe group you tried to contact may not exist.\n");
    let f = one(&r);
    assert_eq!(f.recipient, "list@groups.example");
}

#[test]
fn auto_reply_and_arf_are_not_bounces() {
    let r = run(
        "From: boss@dest.example\nTo: sender@origin.example\nAuto-Submitted: auto-replied\n\
         Subject: Out of Office: your message\n\nI am away until Monday.\n",
    );
    assert_eq!(r.format, Some(BounceFormat::AutoReply));
    assert!(r.recipients.is_empty());
    assert!(r.reason.as_deref().unwrap_or("").contains("auto-reply"));
    let r = run("From: fbl@isp.example\nSubject: FW: report\n\
         Content-Type: multipart/report; report-type=feedback-report; boundary=\"b\"\n\n\
         --b\nContent-Type: text/plain\n\nAn abuse report.\n--b\n\
         Content-Type: message/feedback-report\n\nFeedback-Type: abuse\n--b--\n");
    assert_eq!(r.format, Some(BounceFormat::Feedback));
    assert!(r.recipients.is_empty());
}

#[test]
fn forwarded_quoted_bounce() {
    let r = run("From: sender@origin.example\nTo: admin@origin.example\nSubject: Fwd: Returned mail\n\n\
         Begin forwarded message:\n\n> From: Mail Delivery Subsystem <MAILER-DAEMON@mta.example>\n\
         > Subject: Returned mail: see transcript for details\n>\n\
         >    ----- The following addresses had permanent fatal errors -----\n> <lee@dest.example>\n\
         >     (reason: 550 5.1.1 User unknown)\n>\n>    ----- Transcript of session follows -----\n\
         > ... while talking to mx.dest.example.:\n>>>> RCPT To:<lee@dest.example>\n\
         > <<< 550 5.1.1 <lee@dest.example>... User unknown\n");
    let f = one(&r);
    assert_eq!(f.recipient, "lee@dest.example");
    assert_eq!(f.status, "5.1.1");
}

#[test]
fn commands_and_replies_in_text() {
    assert_eq!(
        command_in("(in reply to end of DATA command)"),
        Some("DATA")
    );
    assert_eq!(
        command_in("SMTP error from remote mail server after RCPT TO:<a@b.c>:"),
        Some("RCPT")
    );
    assert_eq!(
        command_in("mx [1.2.3.4] did not like our final DATA:"),
        Some("DATA")
    );
    assert_eq!(command_in(">>> MAIL From:<a@b.c>"), Some("MAIL"));
    assert_eq!(command_in("(Error following RCPT command)"), Some("RCPT"));
    assert_eq!(command_in("no command named here"), None);
    // qmail-remote's sentences name the step that failed.
    for (text, cmd) in [
        ("Connected to 192.0.2.1 but greeting failed.", "CONN"),
        ("Connected to 192.0.2.1 but my name was rejected.", "HELO"),
        ("Connected to 192.0.2.1 but sender was rejected.", "MAIL"),
        ("192.0.2.1 does not like recipient.", "RCPT"),
        ("192.0.2.1 failed on DATA command.", "DATA"),
        ("192.0.2.1 failed after I sent the message.", "DATA"),
    ] {
        assert_eq!(command_in(text), Some(cmd), "{text}");
    }
    assert_eq!(reply_start("550 5.1.1 no"), Some(0));
    assert_eq!(reply_start("host x[1.2.3.4] said: 550 no"), Some(22));
    assert_eq!(reply_start("<<< 421 busy"), Some(4));
    assert_eq!(reply_start("order 550 units"), None);
}

#[test]
fn bounce_forwarded_as_attachment() {
    let r = run(
        "From: MAILER-DAEMON@gw.example\nTo: ops@gw.example\nSubject: Returned mail\n\
         Content-Type: multipart/mixed; boundary=\"o\"\n\n--o\nContent-Type: text/plain\n\n\
         The original message was received at noon\n--o\nContent-Type: message/rfc822\n\n\
         From: Mail Delivery Subsystem <MAILER-DAEMON@inner.example>\nTo: sender@origin.example\n\
         Subject: Returned mail: User unknown\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"i\"\n\n\
         --i\nContent-Type: text/plain\n\n<max@dest.example>... User unknown\n\
         --i\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; inner.example\n\n\
         Final-Recipient: RFC822; max@dest.example\nAction: failed\nStatus: 5.1.1\n--i--\n--o--\n",
    );
    let f = one(&r);
    assert_eq!(
        (f.recipient.as_str(), f.status.as_str()),
        ("max@dest.example", "5.1.1")
    );
}

#[test]
fn exchange_ims_x400_recipient_under_a_transcript_heading() {
    let r = run(&format!(
        "{HEAD}Subject: Undeliverable: hello\n\nYour message\n\n  To:      list@origin.example\n\
         \x20 Subject: hello\n\ndid not reach the following recipient(s):\n\n\
         c=US;a= ;p=Org;o=Site;dda:SMTP=ann@dest.example; on Mon, 1 Jan 2024\n\
         10:00:00 +0000\n    The recipient name is not recognized\n\
         \tThe MTS-ID of the original message is: c=us;a=\n;p=org;l=ID0001\n\
         \x20   MSEXCH:IMS:Org:Site:HOST 0 (000C05A6) Unknown Recipient\n\n\
         \x20  ----- Transcript of session follows -----\n\nbogus line\n\n   ann@dest.example\n"
    ));
    assert_eq!(r.format, Some(BounceFormat::Exchange));
    let f = one(&r);
    assert_eq!(f.recipient, "ann@dest.example");
    assert!(
        f.diagnostic
            .starts_with("The recipient name is not recognized"),
        "{}",
        f.diagnostic
    );
    assert!(
        f.diagnostic.ends_with("Unknown Recipient"),
        "{}",
        f.diagnostic
    );
}

#[test]
fn qmail_relative_in_html_with_a_bare_address() {
    let r = run(&format!(
        "{HEAD}Subject: failure notice\nContent-Type: text/html\n\n\
         Hi. This is the deliver program at mta.example.<br>\n\
         I'm afraid I wasn't able to deliver your message to the following addresses.<br>\n\
         This is a permanent error; I've given up. Sorry it didn't work out.<br><br>\n\n\
         bo@dest.example<br>\n\nMailbox does not exist<br>\n\n--- Attached is a copy.<br>\n"
    ));
    assert_eq!(r.format, Some(BounceFormat::Qmail));
    let f = one(&r);
    assert_eq!(f.recipient, "bo@dest.example");
    assert_eq!(f.diagnostic, "Mailbox does not exist");
}

#[test]
fn originally_addressed_to_takes_the_lines_around_it() {
    let r = run(
        "From: postmaster@mta.example\nTo: sender@origin.example\nSubject: Delivery failure\n\n\
         Your message could not be handed over\nto local user cy.\n\
         (Originally addressed to cy@dest.example)\n\nNo such account\n\n\
         Your message reads (in part):\n\nhello\n",
    );
    let f = one(&r);
    assert_eq!(f.recipient, "cy@dest.example");
    assert_eq!(
        f.diagnostic,
        "Your message could not be handed over to local user cy. No such account"
    );
}

#[test]
fn addressed_to_in_quotes_is_the_recipient_not_the_originals_to() {
    let r = run(&format!(
        "{HEAD}Subject: Mail delivery failure\n\n\
         The following message, addressed to 'dee@dest.example',\n\
         failed because the mailbox was not emptied for 60 days\n\n\
         ---- START OF RETURNED MESSAGE ----\nFrom: sender@origin.example\n\
         To: list@origin.example\nSubject: hi\n\nbody\n"
    ));
    let f = one(&r);
    assert_eq!(f.recipient, "dee@dest.example");
    assert!(
        f.diagnostic.ends_with("not emptied for 60 days"),
        "{}",
        f.diagnostic
    );
}

#[test]
fn recipients_under_headings_take_the_reason_paragraph() {
    let r = run(&format!(
        "{HEAD}Subject: Returned Mail\n\n\
         This Message was undeliverable due to the following reason:\n\n\
         The destination host was unreachable for 3 days.\n\n\
         The following recipients did not receive your message:\n\n     <e1@dest.example>\n\
         The following recipients did not receive your message:\n\n     <e2@dest.example>\n\n\
         Please reply to postmaster@mta.example\nif you feel this message to be in error.\n"
    ));
    assert_eq!(r.recipients.len(), 2, "{r:#?}");
    for f in &r.recipients {
        assert_eq!(
            f.diagnostic,
            "The destination host was unreachable for 3 days."
        );
    }
}

#[test]
fn a_sentence_broken_around_the_address_and_a_delay() {
    let r = run(
        "From: postmaster@mta.example\nTo: sender@origin.example\nSubject: Mail Delivery Warning\n\n\
         This is an advisory-only email.\n\t\nDelivery of email to this address\n\t\n\
         \"fi@dest.example\"\n\t\nhas been postponed because the mailbox is full.\n\t\n\
         We will continue to try to deliver your message over the next few days.\n",
    );
    let f = one(&r);
    assert_eq!(
        f.diagnostic,
        "Delivery of email to this address \"fi@dest.example\" has been postponed because the mailbox is full."
    );
    assert_eq!(f.action, "delayed");
}

#[test]
fn an_address_alone_is_not_a_diagnostic() {
    let r = run(
        "From: admin@mta.example\nTo: sender@origin.example\nSubject: Non-Delivery: hello\n\n\
         --- Non-Delivery Report ---\nThe email below could not be delivered to the following user:\n\n\
         \"gus@dest.example\" <gus@dest.example>\n\nOld message:\n\nhello\n",
    );
    let f = one(&r);
    assert_eq!(f.recipient, "gus@dest.example");
    assert_eq!(
        f.diagnostic,
        "The email below could not be delivered to the following user:"
    );
}

#[test]
fn exim_delay_warning_with_the_host_line_at_column_zero() {
    let r = run(&format!(
        "{HEAD}Subject: Warning: message delayed\n\n\
         This message was created automatically by mail delivery software.\n\n\
         A message that you sent has not yet been delivered to one or more of\nits recipients after 2 days.\n\n\
         The message has not yet been delivered to the following addresses:\n\n  <hal@dest.example>\n\n\
         host mx.dest.example[192.0.2.7]:\nconnection to mail exchanger failed\n\n\
         No action is required on your part. Delivery attempts will continue for\nsome time.\n"
    ));
    assert_eq!(r.format, Some(BounceFormat::Exim));
    let f = one(&r);
    assert_eq!(f.recipient, "hal@dest.example");
    assert_eq!(f.action, "delayed");
    assert_eq!(
        f.diagnostic,
        "host mx.dest.example[192.0.2.7]: connection to mail exchanger failed"
    );
}

#[test]
fn an_error_detail_section_under_the_address_gives_its_reason() {
    let r = run(&format!(
        "{HEAD}Subject: Returned mail - nameserver error report\n\n\
         \x20--------Message not delivered to the following addresses:\n\n\
         \x20           ida@dest.example\n\n --------Error Detail:\n\n\
         ---- ida@dest.example\n     Has no final delivery point,\n     please use another address.\n\n\
         \x20--------Unsent Message below:\n\nhello\n"
    ));
    let f = one(&r);
    assert_eq!(f.recipient, "ida@dest.example");
    assert_eq!(
        f.diagnostic,
        "Has no final delivery point, please use another address."
    );
}

#[test]
fn typed_recipient_contact_lines_and_senders_are_told_apart() {
    let r = run(
        "From: postmaster@mta.example\nTo: sender@origin.example\nSubject: Message Delivery Failure\n\n\
         Message could not be delivered to some recipients.\n\n\
         \tRecipient: [SMTP:jo@dest.example]\n\tReason: 550 mailbox unavailable\n\n\
         System Contact: help@mta.example\n",
    );
    let f = one(&r);
    assert_eq!(f.recipient, "jo@dest.example");
    assert_eq!(f.diagnostic, "550 mailbox unavailable");

    let r = run(
        "From: mailer-daemon@mta.example\nTo: list-bounces@origin.example\nSubject: Mail Delivery Problem\n\n\
         Your mail to the following recipients could not be delivered because they are not \
         accepting mail from list@origin.example:\n\tnickname\n",
    );
    assert!(r.recipients.is_empty(), "{r:#?}");
}

#[test]
fn a_reason_field_paragraph_and_an_exim_undisclosed_address() {
    let r = run(
        "From: mailer-daemon@mta.example\nTo: sender@origin.example\nSubject: Undelivered Mail\n\n\
         Undeliverable Address: kai@dest.example\n\n\
         Reason: The email you sent to the address above was returned\n\
         because the recipient is over disk quota.\n\nSystem Contact: staff@mta.example\n",
    );
    let f = one(&r);
    assert_eq!(f.recipient, "kai@dest.example");
    assert_eq!(
        f.diagnostic,
        "The email you sent to the address above was returned because the recipient is over disk quota."
    );

    let r = run(&format!(
        "{HEAD}Subject: Mail delivery failed\n\n\
         This message was created automatically by mail delivery software.\n\n\
         A message that you sent could not be delivered to one or more of its\n\
         recipients. This is a permanent error. The following address(es) failed:\n\n\
         \x20 an undisclosed address\n    (generated from lee@dest.example)\n\n\
         ------ This is a copy of the message, including all the headers. ------\n"
    ));
    assert_eq!(r.format, Some(BounceFormat::Exim));
    assert_eq!(one(&r).recipient, "lee@dest.example");
}

#[test]
fn multibyte_text_around_recipients_does_not_break_the_reading() {
    let r = run(
        "From: postmaster@mta.example\nTo: sender@origin.example\nSubject: Delivery failure\n\n\
         Reasón: é\nnäme\n(Originally addressed to mo@dest.example)\n\n配信できませんでした\n",
    );
    assert_eq!(one(&r).recipient, "mo@dest.example");
}

#[test]
fn the_paragraph_after_a_bare_address_is_its_reason_unless_boilerplate() {
    let r = run(
        "From: postmaster@mta.example\nTo: sender@origin.example\nSubject: Failed mail\n\n\
         Your message was not delivered to\n \n    ned@dest.example\n \n\
         This mail message has exceeded the maximum incoming message size.\n",
    );
    assert_eq!(
        one(&r).diagnostic,
        "This mail message has exceeded the maximum incoming message size."
    );
    let r = run(
        "From: postmaster@mta.example\nTo: sender@origin.example\nSubject: Undeliverable\n\n\
         Your Message\nDate:    Mon, 1 Jan 2024 10:00:00 +0000\n\
         Did not reach the following recipient: oz@dest.example\n\nPlease contact your administrator.\n",
    );
    let d = &one(&r).diagnostic;
    assert!(!d.starts_with("Date:") && !d.starts_with("Please"), "{d}");
}

#[test]
fn dsn_final_recipient_at_a_single_label_host() {
    // Local delivery after an alias expansion: the failed address is at the local host.
    let r = run(&format!(
        "{HEAD}Subject: Undelivered Mail Returned to Sender\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n\
         --b\nContent-Type: text/plain\n\n<amy@mailhost> (expanded from <amy@dest.example>): \
         can't create user output file\n\
         --b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mailhost\n\n\
         Final-Recipient: rfc822; amy@mailhost\nOriginal-Recipient: rfc822;amy@dest.example\n\
         Action: failed\nStatus: 5.2.0\nDiagnostic-Code: x-unix; procmail: Lock failure\n--b--\n"
    ));
    let f = one(&r);
    assert_eq!(f.recipient, "amy@mailhost");
    assert_eq!(f.original_recipient.as_deref(), Some("amy@dest.example"));
}

#[test]
fn exim_delivery_named_without_an_address() {
    // "save to <file>" and "generated by <alias>" with no address: the header names it.
    let r = run(&format!(
        "{HEAD}X-Failed-Recipients: amy@dest.example\n\
         Subject: Mail delivery failed: returning message to sender\n\n\
         This message was created automatically by mail delivery software.\n\n\
         A message that you sent could not be delivered to one or more of its\n\
         recipients. This is a permanent error. The following address(es) failed:\n\n\
         \x20 save to mbox\n    generated by amy\n    mailbox is full: retry timeout exceeded\n\n\
         ------ This is a copy of the message, including all the headers. ------\n"
    ));
    assert_eq!(r.format, Some(BounceFormat::Exim));
    let f = one(&r);
    assert_eq!(f.recipient, "amy@dest.example");
    assert_eq!(f.diagnostic, "mailbox is full: retry timeout exceeded");
    assert_eq!(f.category.as_str(), "quota-issues");
}

#[test]
fn dsn_address_type_written_with_a_slash() {
    // "Final-Recipient : rfc/822;addr" (Mimecast's DSN writes the type so, and a space before
    // each colon).
    let r = run(&format!(
        "{HEAD}Subject: [Postmaster] Email Delivery Failure\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n\
         --b\nContent-Type: text/plain\n\nThis is a delivery failure notification message.\n\
         --b\nContent-Type: message/delivery-status\n\n\
         Reporting-MTA : dns;mx.relay.example\nAction : failed\nStatus : 5.0.0\n\
         Diagnostic-Code : smtp;550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain\n\
         Final-Recipient : rfc/822;amy@dest.example\n\n--b--\n"
    ));
    let f = one(&r);
    assert_eq!(f.recipient, "amy@dest.example");
    assert_eq!(f.category.as_str(), "relaying-issues");
}

#[test]
fn mimecast_delivery_failure_text() {
    let r = run(
        "From: postmaster@relay.example\nTo: sender@origin.example\n\
         Subject: [Postmaster] Email Delivery Failure\n\n\
         This is an automated alert notification. Please do not reply.\n\n\
         An email that you attempted to send to the following address could not be delivered:\n\
         -- amy@dest.example\n\nThe problem appears to be :\n\
         -- Recipient email address is possibly incorrect\n\nAdditional information follows :\n\
         -- 5.4.1 Recipient address rejected: Access denied. [mx.dest.example]\n\n\
         This condition occurred after 1 attempt(s) to deliver over\na period of 0 hour(s).\n",
    );
    let f = one(&r);
    assert_eq!(f.recipient, "amy@dest.example");
    assert_eq!(f.status, "5.4.1");
    assert!(
        f.diagnostic.starts_with("5.4.1 Recipient address rejected"),
        "{}",
        f.diagnostic
    );
    assert_eq!(f.category.as_str(), "bad-mailbox");
}

#[test]
fn recipient_lines_with_replies_outweigh_a_header_naming_none_of_them() {
    let r = run(&format!(
        "{HEAD}X-Failed-Recipients: old@dest.example\n\
         Subject: Mail delivery failed: returning message to sender\n\n\
         |------------------------- Failed addresses follow: ---------------------|\n\
         \x20<amy@dest.example>\n   552 5.2.2 <amy@dest.example> Quota exceeded (mailbox for user is full)\n\
         \x20<bob@dest.example>\n   550 5.1.1 <bob@dest.example> unknown user\n\n\
         |------------------------- Message header follows: ----------------------|\n\
         To: <amy@dest.example>, <bob@dest.example>\n"
    ));
    let got: Vec<(&str, &str)> = r
        .recipients
        .iter()
        .map(|f| (f.recipient.as_str(), f.category.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("amy@dest.example", "quota-issues"),
            ("bob@dest.example", "bad-mailbox")
        ]
    );
}

#[test]
fn dsn_diagnostic_with_only_the_first_line_of_a_multiline_reply() {
    let r = run(&format!(
        "{HEAD}Subject: Returned mail: see transcript for details\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n\
         --b\n\n   ----- Transcript of session follows -----\n\
         ... while talking to mx.dest.example.:\n>>> DATA\n\
         <<< 550-5.7.1 [192.0.2.1] Our system has detected that this message is\n\
         <<< 550-5.7.1 likely unsolicited mail. This message has been blocked.\n\
         <<< 550 5.7.1 More information at the postmaster site.\n\
         554 5.0.0 Service unavailable\n\
         --b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mta.example\n\n\
         Final-Recipient: RFC822; amy@dest.example\nAction: failed\nStatus: 5.7.1\n\
         Diagnostic-Code: SMTP; 550-5.7.1 [192.0.2.1] Our system has detected that this message is\n\
         --b--\n"
    ));
    let f = one(&r);
    assert!(
        f.diagnostic.contains("likely unsolicited mail"),
        "{}",
        f.diagnostic
    );
    assert!(
        f.diagnostic.ends_with("postmaster site."),
        "{}",
        f.diagnostic
    );
    assert_eq!(f.category.as_str(), "spam-related");
}

/// A DSN without Diagnostic-Code: the Status field's comment is the reason, unless it is only
/// RFC 3463's "other or undefined" description.
#[test]
fn status_comment_when_no_diagnostic() {
    let dsn = |status: &str| {
        run(&format!(
            "{HEAD}Subject: Delivery Notification: Delivery has failed\n\
             Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n\
             --b\nContent-Type: text/plain\n\nThis report relates to a message you sent.\n\n\
             --b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; ms.example\n\n\
             Final-Recipient: rfc822; ann@dest.example\nAction: failed\nStatus: {status}\n\n--b--\n"
        ))
    };
    let r = dsn("5.2.2 (recipient reached disk quota)");
    let f = one(&r);
    assert_eq!(f.diagnostic, "recipient reached disk quota");
    assert_eq!(f.category, Category::QuotaIssues);
    let r = dsn("5.4.0 (other or undefined network or routing status)");
    assert_ne!(
        one(&r).diagnostic,
        "other or undefined network or routing status"
    );
}
