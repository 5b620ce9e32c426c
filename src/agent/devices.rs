//! Block devices from udev, turned into typed [`DiskEvent`]s at the boundary.
//!
//! A file system appearing is an `add`, or a `change` carrying `ID_FS_*` (loop devices and
//! card readers send `change`, USB partitions `add`); a `remove`, or a `change` without
//! `ID_FS_*` on a device whose size went to 0, is a pulled tray.

use std::io;
use std::path::PathBuf;

/// A file system on a block device.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Disk {
    pub devnode: PathBuf,
    /// The device number (`st_rdev` of the node, `st_dev` of files on its file system).
    pub devnum: u64,
    pub fs_uuid: String,
    pub fs_type: String,
    pub label: Option<String>,
    pub syspath: PathBuf,
    /// The udev rule marked it a candidate (`TRAYBACK_CANDIDATE=1`: a removable or
    /// hot-pluggable disk).
    pub candidate: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskEvent {
    Appeared(Disk),
    Gone { devnode: PathBuf },
}

fn prop(dev: &udev::Device, key: &str) -> Option<String> {
    dev.property_value(key)
        .map(|v| v.to_string_lossy().into_owned())
        .filter(|v| !v.is_empty())
}

/// The disk a udev device describes, if it carries a file system.
pub fn disk_of(dev: &udev::Device) -> Option<Disk> {
    if prop(dev, "ID_FS_USAGE").as_deref() != Some("filesystem") {
        return None;
    }
    Some(Disk {
        devnode: dev.devnode()?.to_path_buf(),
        devnum: dev.devnum()?,
        fs_uuid: prop(dev, "ID_FS_UUID")?,
        fs_type: prop(dev, "ID_FS_TYPE")?,
        label: prop(dev, "ID_FS_LABEL"),
        syspath: dev.syspath().to_path_buf(),
        candidate: prop(dev, "TRAYBACK_CANDIDATE").as_deref() == Some("1"),
    })
}

/// Turn one udev event into a disk event (or nothing).
pub fn event_of(ev: &udev::Event) -> Option<DiskEvent> {
    let dev = ev.device();
    let devnode = dev.devnode()?.to_path_buf();
    match ev.event_type() {
        udev::EventType::Remove => Some(DiskEvent::Gone { devnode }),
        udev::EventType::Add | udev::EventType::Change => match disk_of(&dev) {
            Some(d) => Some(DiskEvent::Appeared(d)),
            // A loop device detached, a card taken out: the medium is gone (size 0). Any
            // other change without a file system (udev still probing) is not a pull.
            None if ev.event_type() == udev::EventType::Change && no_medium(&dev) => {
                Some(DiskEvent::Gone { devnode })
            }
            None => None,
        },
        _ => None,
    }
}

/// The device holds no medium (its size is 0, or it has no size).
fn no_medium(dev: &udev::Device) -> bool {
    dev.attribute_value("size")
        .and_then(|v| v.to_str())
        .is_none_or(|v| v.trim() == "0")
}

/// File systems present now (the agent's start).
pub fn enumerate() -> io::Result<Vec<Disk>> {
    let mut e = udev::Enumerator::new()?;
    e.match_subsystem("block")?;
    e.match_property("ID_FS_USAGE", "filesystem")?;
    Ok(e.scan_devices()?.filter_map(|d| disk_of(&d)).collect())
}

/// A udev monitor for block devices (events after rule processing).
pub fn monitor() -> io::Result<udev::MonitorSocket> {
    udev::MonitorBuilder::new()?
        .match_subsystem("block")?
        .listen()
}
