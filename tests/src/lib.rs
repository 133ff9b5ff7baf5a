//! Shared harness for ccbt's end-to-end tests: locating the built binary, running it, and
//! requiring the independent tools (libtorrent, mktorrent) the interop tests compare against.
