//! basalt-server
