//! Configuration errors and the header-name check shared by both layers:
//! core's [`parse_header_name`] and its error, the same check
//! `rampart-timeout` applies to its deadline header.

// Why a layer configuration was refused: a header name that is not valid,
// or one HTTP framing or gRPC owns (`content-length`, `host`, `te`,
// `grpc-*`, …). Its docs are core's.
pub use rampart_core::codec::HeaderNameError as ConfigError;
// Parses and checks a configured header name (case-insensitive).
pub(crate) use rampart_core::codec::parse_header_name as header_name;
