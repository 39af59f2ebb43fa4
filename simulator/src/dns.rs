//! The world's DNS: hickory-server authoritative for the world's zones (live) and in-process answers (simulated).
