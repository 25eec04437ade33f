//! One module per subcommand.
pub mod audit;
pub mod bench;
pub mod compliance;
pub mod erase;
pub mod init;
pub mod keys;
pub mod master;
pub mod migrate;
pub mod quickstart;
pub mod scan;
pub mod serve;
