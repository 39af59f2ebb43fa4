//! SMTP protocol: command and reply codec, DATA handling, limits; shared by server and client.
