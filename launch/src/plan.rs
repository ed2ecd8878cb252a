//! A launch plan: the ordered pages a guest's launch puts into encrypted memory, as given to
//! SNP_LAUNCH_UPDATE (guest address, page type, contents), followed by one VMSA per vCPU.
//! The digest a verifier expects is computed from the plan alone; a VMM that launches the
//! guest itself executes the same plan, so prediction and launch cannot drift apart.

use sha2::{Digest, Sha384};

use crate::digest::{LaunchDigest, LAUNCH_DIGEST_BYTES};

pub const PAGE_SIZE: usize = 4096;

/// Where VMSA pages are recorded: GPA -1, page aligned, bits above 51 clear.
pub const VMSA_GPA: u64 = 0xFFFF_FFFF_F000;

/// SNP_LAUNCH_UPDATE page types (SNP ABI, table "PAGE_TYPE field encodings").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageKind {
    /// Measured data, a whole number of pages.
    Normal(Vec<u8>),
    /// Zero pages of this many bytes (a multiple of 4 KiB).
    Zero(usize),
    /// Encrypted but not measured, this many bytes.
    Unmeasured(usize),
    /// The secrets page the AMD-SP fills.
    Secrets,
    /// The CPUID page the AMD-SP checks.
    Cpuid,
    /// One vCPU's save area.
    Vmsa(Vec<u8>),
}

impl PageKind {
    pub fn page_type(&self) -> u8 {
        match self {
            Self::Normal(_) => 0x1,
            Self::Vmsa(_) => 0x2,
            Self::Zero(_) => 0x3,
            Self::Unmeasured(_) => 0x4,
            Self::Secrets => 0x5,
            Self::Cpuid => 0x6,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRecord {
    pub gpa: u64,
    pub kind: PageKind,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("page record at {gpa:#x}: {bytes} bytes is not a whole number of 4 KiB pages")]
    NotPageSized { gpa: u64, bytes: usize },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchPlan {
    /// A digest the launch starts from (a precomputed firmware digest), else zeros.
    pub seed: Option<LaunchDigest>,
    pub records: Vec<PageRecord>,
}

fn sha384(data: &[u8]) -> [u8; LAUNCH_DIGEST_BYTES] {
    Sha384::digest(data).into()
}

fn whole_pages(gpa: u64, bytes: usize) -> Result<usize, PlanError> {
    if bytes.is_multiple_of(PAGE_SIZE) {
        Ok(bytes / PAGE_SIZE)
    } else {
        Err(PlanError::NotPageSized { gpa, bytes })
    }
}

impl LaunchPlan {
    pub fn push(&mut self, gpa: u64, kind: PageKind) {
        self.records.push(PageRecord { gpa, kind });
    }

    /// The launch digest after every record, page by page.
    pub fn digest(&self) -> Result<LaunchDigest, PlanError> {
        let mut digest = self.seed.unwrap_or_default();
        let zeros = [0u8; LAUNCH_DIGEST_BYTES];
        for record in &self.records {
            let page_type = record.kind.page_type();
            match &record.kind {
                PageKind::Normal(data) => {
                    whole_pages(record.gpa, data.len())?;
                    for (index, page) in data.chunks(PAGE_SIZE).enumerate() {
                        let gpa = record.gpa + (index * PAGE_SIZE) as u64;
                        digest.extend(page_type, gpa, &sha384(page));
                    }
                }
                PageKind::Zero(bytes) | PageKind::Unmeasured(bytes) => {
                    for index in 0..whole_pages(record.gpa, *bytes)? {
                        digest.extend(page_type, record.gpa + (index * PAGE_SIZE) as u64, &zeros);
                    }
                }
                PageKind::Secrets | PageKind::Cpuid => digest.extend(page_type, record.gpa, &zeros),
                PageKind::Vmsa(page) => {
                    whole_pages(VMSA_GPA, page.len())?;
                    digest.extend(page_type, VMSA_GPA, &sha384(page));
                }
            }
        }
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_page_records_equal_page_by_page_records() {
        let data: Vec<u8> = (0..2 * PAGE_SIZE).map(|i| (i % 251) as u8).collect();
        let mut whole = LaunchPlan::default();
        whole.push(0x10000, PageKind::Normal(data.clone()));
        whole.push(0x20000, PageKind::Zero(2 * PAGE_SIZE));
        let mut split = LaunchPlan::default();
        split.push(0x10000, PageKind::Normal(data[..PAGE_SIZE].to_vec()));
        split.push(0x11000, PageKind::Normal(data[PAGE_SIZE..].to_vec()));
        split.push(0x20000, PageKind::Zero(PAGE_SIZE));
        split.push(0x21000, PageKind::Zero(PAGE_SIZE));
        assert_eq!(whole.digest(), split.digest());
    }

    #[test]
    fn order_type_and_address_all_count() {
        let mut plan = LaunchPlan::default();
        plan.push(0x1000, PageKind::Secrets);
        plan.push(0x2000, PageKind::Cpuid);
        let base = plan.digest().expect("digest");
        let mut swapped = LaunchPlan::default();
        swapped.push(0x2000, PageKind::Cpuid);
        swapped.push(0x1000, PageKind::Secrets);
        assert_ne!(swapped.digest().expect("digest"), base);
        let mut moved = plan.clone();
        moved.records[0].gpa = 0x3000;
        assert_ne!(moved.digest().expect("digest"), base);
        let mut retyped = plan.clone();
        retyped.records[0].kind = PageKind::Zero(PAGE_SIZE);
        assert_ne!(retyped.digest().expect("digest"), base);
    }

    #[test]
    fn partial_pages_are_refused() {
        let mut plan = LaunchPlan::default();
        plan.push(0x1000, PageKind::Normal(vec![1; 100]));
        assert_eq!(
            plan.digest(),
            Err(PlanError::NotPageSized {
                gpa: 0x1000,
                bytes: 100
            })
        );
    }
}
