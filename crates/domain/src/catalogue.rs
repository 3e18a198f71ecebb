//! Flavors and images: what a notebook can run on and what it runs.
use std::fmt;
use std::str::FromStr;

use crate::notebook::UnknownValue;
use crate::{EpochMillis, Feature, ImageId};

#[derive(Debug, Clone, PartialEq)]
pub struct Flavor {
    pub id: String,
    pub name: String,
    pub category: FlavorCategory,
    pub arch: String,
    pub description: String,
    pub feature: Feature,
    pub free: bool,
    pub sold_out: bool,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub storages: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlavorCategory {
    Cpu,
    Gpu,
    Ascend,
}

impl FlavorCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            FlavorCategory::Cpu => "CPU",
            FlavorCategory::Gpu => "GPU",
            FlavorCategory::Ascend => "ASCEND",
        }
    }
}

impl FromStr for FlavorCategory {
    type Err = UnknownValue;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        [
            FlavorCategory::Cpu,
            FlavorCategory::Gpu,
            FlavorCategory::Ascend,
        ]
        .into_iter()
        .find(|c| c.as_str().eq_ignore_ascii_case(text))
        .ok_or(UnknownValue)
    }
}

impl Flavor {
    pub fn cpu(id: &str, vcpus: u32, memory_gib: u64, feature: Feature) -> Flavor {
        let free = feature == Feature::Default;
        Flavor {
            id: id.to_owned(),
            name: format!("CPU: {vcpus} vCPUs {memory_gib} GB"),
            category: FlavorCategory::Cpu,
            arch: "x86_64".to_owned(),
            description: if free {
                "Free CodeLab flavor".to_owned()
            } else {
                format!("General computing, {vcpus} vCPUs and {memory_gib} GiB memory")
            },
            feature,
            free,
            sold_out: false,
            vcpus,
            memory_mib: memory_gib * 1024,
            storages: if free {
                vec!["EFS".to_owned()]
            } else {
                vec!["EVS".to_owned(), "EFS".to_owned()]
            },
        }
    }

    /// The built-in catalogue; the configuration may replace it.
    pub fn builtin() -> Vec<Flavor> {
        vec![
            Flavor::cpu("modelarts.vm.cpu.free", 1, 4, Feature::Default),
            Flavor::cpu("modelarts.vm.cpu.2u", 2, 8, Feature::Notebook),
            Flavor::cpu("modelarts.vm.cpu.8u", 8, 32, Feature::Notebook),
        ]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageType {
    BuildIn,
    Dedicated,
}

impl ImageType {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageType::BuildIn => "BUILD_IN",
            ImageType::Dedicated => "DEDICATED",
        }
    }
}

impl fmt::Display for ImageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ImageType {
    type Err = UnknownValue;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        [ImageType::BuildIn, ImageType::Dedicated]
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(text))
            .ok_or(UnknownValue)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub id: ImageId,
    /// The owning project for DEDICATED images; `None` for the built-in catalogue.
    pub project_id: Option<String>,
    pub name: String,
    pub namespace: String,
    pub tag: String,
    pub swr_path: String,
    pub kind: ImageType,
    pub origin: String,
    pub arch: String,
    pub description: String,
    pub dev_services: Vec<String>,
    pub resource_categories: Vec<String>,
    pub service_type: String,
    pub size_kb: i64,
    /// `INIT`, `CREATING` (being saved), `ACTIVE`, `CREATE_FAILED`, `DELETED`.
    pub status: String,
    /// Why a save failed (`CREATE_FAILED`); empty otherwise.
    pub status_message: String,
    pub visibility: String,
    pub workspace_id: String,
    pub create_at: EpochMillis,
    pub update_at: EpochMillis,
}

/// The id of the built-in JupyterLab image: fixed, so scripts and Terraform can name it.
pub const BUILTIN_JUPYTERLAB_IMAGE_ID: ImageId =
    ImageId::from_u128(0xe1a0_7296_22a8_4f05_8bc8_e936_c8e5_4090);

impl Image {
    pub fn builtin() -> Vec<Image> {
        vec![Image {
            id: BUILTIN_JUPYTERLAB_IMAGE_ID,
            project_id: None,
            name: "jupyterlab-python3.11".to_owned(),
            namespace: "atelier".to_owned(),
            tag: "4.4".to_owned(),
            swr_path: "atelier.local/atelier/jupyterlab-python3.11:4.4".to_owned(),
            kind: ImageType::BuildIn,
            origin: "CUSTOMIZE".to_owned(),
            arch: "x86_64".to_owned(),
            description: "JupyterLab 4 on Python 3.11 (CPU)".to_owned(),
            dev_services: vec!["NOTEBOOK".to_owned(), "SSH".to_owned()],
            resource_categories: vec!["CPU".to_owned()],
            service_type: "DEV".to_owned(),
            size_kb: 0,
            status: "ACTIVE".to_owned(),
            status_message: String::new(),
            visibility: "PUBLIC".to_owned(),
            workspace_id: "0".to_owned(),
            create_at: 1_767_225_600_000,
            update_at: 1_767_225_600_000,
        }]
    }
}
