//! One module per subcommand.
pub mod audit;
pub mod dev;
pub mod init;
pub mod keys;
pub mod scan;
