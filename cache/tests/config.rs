//! Configuration: defaults, every variable, the default directory, exact error messages.

use std::collections::HashMap;
use std::path::PathBuf;

use metajit_cache::{CacheConfig, CacheMode, ConfigError};

fn config(vars: &[(&str, &str)]) -> Result<CacheConfig, ConfigError> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    CacheConfig::from_vars(|name| vars.get(name).cloned())
}

fn error(vars: &[(&str, &str)]) -> String {
    config(vars)
        .expect_err("a bad value must be an error")
        .to_string()
}

#[test]
fn defaults() {
    let c = config(&[("HOME", "/home/u")]).unwrap();
    assert_eq!(
        c,
        CacheConfig {
            mode: CacheMode::Disk,
            dir: PathBuf::from("/home/u/.cache/metajit"),
            max_bytes: 1024 << 20,
        }
    );
}

#[test]
fn default_dir_prefers_xdg_then_home_then_temp() {
    let xdg = [("XDG_CACHE_HOME", "/xdg"), ("HOME", "/home/u")];
    assert_eq!(config(&xdg).unwrap().dir, PathBuf::from("/xdg/metajit"));
    let empty_xdg = [("XDG_CACHE_HOME", ""), ("HOME", "/home/u")];
    assert_eq!(
        config(&empty_xdg).unwrap().dir,
        PathBuf::from("/home/u/.cache/metajit")
    );
    // The XDG spec says a relative path is to be ignored.
    let relative_xdg = [("XDG_CACHE_HOME", "rel"), ("HOME", "/home/u")];
    assert_eq!(
        config(&relative_xdg).unwrap().dir,
        PathBuf::from("/home/u/.cache/metajit")
    );
    assert_eq!(
        config(&[("HOME", "")]).unwrap().dir,
        std::env::temp_dir().join("metajit-cache")
    );
    assert_eq!(
        config(&[]).unwrap().dir,
        std::env::temp_dir().join("metajit-cache")
    );
}

#[test]
fn every_variable_is_read() {
    let c = config(&[
        ("METAJIT_CACHE", "MeMoRy"),
        ("METAJIT_CACHE_DIR", "/somewhere/else"),
        ("METAJIT_CACHE_MAX_MB", "3"),
        ("XDG_CACHE_HOME", "/xdg"),
    ])
    .unwrap();
    assert_eq!(
        c,
        CacheConfig {
            mode: CacheMode::Memory,
            dir: PathBuf::from("/somewhere/else"),
            max_bytes: 3 << 20
        }
    );
    assert_eq!(
        config(&[("METAJIT_CACHE", "off")]).unwrap().mode,
        CacheMode::Off
    );
    assert_eq!(
        config(&[("METAJIT_CACHE", "DISK")]).unwrap().mode,
        CacheMode::Disk
    );
    assert_eq!(
        config(&[("METAJIT_CACHE_MAX_MB", "0")]).unwrap().max_bytes,
        0
    );
    // More megabytes than a u64 holds in bytes: no bound, not an error.
    let huge = config(&[("METAJIT_CACHE_MAX_MB", "99999999999999999999999")]).unwrap();
    assert_eq!(huge.max_bytes, u64::MAX);
}

#[test]
fn empty_values_count_as_unset() {
    let c = config(&[
        ("METAJIT_CACHE", ""),
        ("METAJIT_CACHE_DIR", ""),
        ("METAJIT_CACHE_MAX_MB", ""),
        ("HOME", "/h"),
    ])
    .unwrap();
    assert_eq!(c, config(&[("HOME", "/h")]).unwrap());
}

#[test]
fn bad_values_name_the_variable_and_the_allowed_values() {
    assert_eq!(
        error(&[("METAJIT_CACHE", "dsk")]),
        r#"METAJIT_CACHE="dsk" is not valid; allowed values: disk, memory, off"#
    );
    for bad in ["lots", "-1", "+5", "1.5", " 5", "0x10"] {
        assert_eq!(
            error(&[("METAJIT_CACHE_MAX_MB", bad)]),
            format!(
                "METAJIT_CACHE_MAX_MB={bad:?} is not valid; allowed values: a non-negative integer (megabytes)"
            )
        );
    }
    let e = config(&[("METAJIT_CACHE", "on")]).unwrap_err();
    assert_eq!((e.variable, e.value.as_str()), ("METAJIT_CACHE", "on"));
}

#[test]
fn mode_parses_and_prints() {
    for mode in [CacheMode::Disk, CacheMode::Memory, CacheMode::Off] {
        assert_eq!(mode.to_string().parse::<CacheMode>(), Ok(mode));
    }
    assert_eq!("Off".parse::<CacheMode>(), Ok(CacheMode::Off));
    assert!("".parse::<CacheMode>().is_err());
}

/// `from_os_vars`: a directory that is not UTF-8 is kept as it is; a mode or bound that is not
/// UTF-8 is an error naming the variable (not dropped as if unset).
#[test]
fn os_values() {
    use std::ffi::{OsStr, OsString};
    use std::os::unix::ffi::OsStrExt;
    let odd = OsStr::from_bytes(b"/tmp/caf\xe9");
    let get = |pairs: Vec<(&'static str, OsString)>| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        }
    };
    let c = CacheConfig::from_os_vars(get(vec![("METAJIT_CACHE_DIR", odd.to_owned())])).unwrap();
    assert_eq!(c.dir, PathBuf::from(odd));
    let bad = OsStr::from_bytes(b"memory\xff").to_owned();
    let e = CacheConfig::from_os_vars(get(vec![("METAJIT_CACHE", bad)])).unwrap_err();
    assert_eq!(e.variable, "METAJIT_CACHE");
    let bad = OsStr::from_bytes(b"1\xff").to_owned();
    let e = CacheConfig::from_os_vars(get(vec![("METAJIT_CACHE_MAX_MB", bad)])).unwrap_err();
    assert_eq!(e.variable, "METAJIT_CACHE_MAX_MB");
}
