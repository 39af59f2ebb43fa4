//! The DNS seam: MX, A/AAAA, TXT and PTR look-ups, live through hickory-resolver or answered in-process.
