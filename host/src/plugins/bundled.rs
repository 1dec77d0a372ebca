//! The providers compiled into the `bnr` binary (built by `host/build.rs`).

/// One bundled provider component.
#[derive(Debug)]
pub struct Bundled {
    /// File name it was built as (`bnr_<name>.wasm`).
    pub file: &'static str,
    /// Lower-case hex sha256 of `wasm`, computed when the binary was built: what it is trusted by.
    pub sha256: &'static str,
    /// The component.
    pub wasm: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/embedded_providers.rs"));
