//! The repository `config` object: `RepoConfig::from_bytes`.
#![no_main]
use ibs_repo::config::RepoConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = RepoConfig::from_bytes(data) {
        assert!(RepoConfig::from_bytes(&c.to_bytes()).is_ok());
    }
});
