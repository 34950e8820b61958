//! `seer-testbed-svc`: the logic tier's RPC service. One instance per scenario service; its JSON
//! config (written by the testbed) gives the listening address, CPU work per request, callees
//! and call mode. Wire protocol, one request per line on reused connections:
//!
//! - RPC: request `REQ\n`, reply `OK <reply_bytes of 'x'>\n` (or `ERR <why>\n`).
//! - HTTP/1.1 (from nginx): any `GET`/`POST` request; reply 200 with the same body (502 on error).
//!
//! Callees are reached over a pool of kept-alive connections per callee: other rpc services,
//! memcached (text protocol `get`, `set` on a miss) and redis (RESP `GET`, `SET` on a miss).
//! A control socket (Unix, `ctl` in the config) takes `block <us>` (the blocking-bug fault: a
//! synchronous sleep on the event loop per request), `work <us>` (extra CPU per request) and
//! `stats`.
pub mod callee;
pub mod config;
pub mod ctl;
pub mod server;
pub mod work;

pub use config::{CalleeConfig, SvcConfig};
