//! Input sets (docs/WORKLOADS.md, "Input sets"): a job's items given as bytes instead of an
//! integer range.
//!
//! Items travel as *records*: each item's length as 4 little-endian bytes, then its bytes (at
//! most [`MAX_INPUT_BYTES`]). An input set is uploaded as pages of records (at most
//! [`MAX_INPUT_PAGE_BYTES`] each, every page holding whole items), and a lease's inputs are
//! served to its device as the records of its items, cut out of the pages with the page's
//! *index*: the offset of every record and of the page's end, each as 4 little-endian bytes.

use std::ops::Range;

use shared_protocol::{MAX_INPUT_PAGE_BYTES, MAX_INPUT_SET_ITEMS};

use crate::module::MAX_INPUT_BYTES;

const HEADER_BYTES: usize = 4;

/// The records of these items, in order.
pub fn encode<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut records = Vec::new();
    for item in items {
        push(&mut records, item);
    }
    records
}

fn push(records: &mut Vec<u8>, item: &[u8]) {
    // Items are at most 64 KiB.
    records.extend_from_slice(&u32::try_from(item.len()).unwrap_or(u32::MAX).to_le_bytes());
    records.extend_from_slice(item);
}

/// Where each record's item lies in `records`, checking that every record is whole and its
/// item within the limit; says what is wrong with the first record that is not.
pub fn ranges(records: &[u8]) -> Result<Vec<Range<usize>>, String> {
    let mut ranges = Vec::new();
    let mut at = 0usize;
    while at < records.len() {
        let index = ranges.len();
        let len = records
            .get(at..at.saturating_add(HEADER_BYTES))
            .and_then(|header| header.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| format!("item {index}'s length is cut off"))?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > MAX_INPUT_BYTES {
            return Err(format!(
                "item {index} is {len} bytes; the limit is {MAX_INPUT_BYTES}"
            ));
        }
        let start = at.saturating_add(HEADER_BYTES);
        let end = start.saturating_add(len);
        if end > records.len() {
            return Err(format!(
                "item {index} claims {len} bytes the file does not have"
            ));
        }
        ranges.push(start..end);
        at = end;
    }
    Ok(ranges)
}

/// The items of `records`, which must be exactly `items` of them (a lease's inputs).
pub fn split(records: &[u8], items: u64) -> Result<Vec<&[u8]>, String> {
    let ranges = ranges(records)?;
    if ranges.len() as u64 != items {
        return Err(format!(
            "{} inputs came for a lease of {items} items",
            ranges.len()
        ));
    }
    Ok(ranges
        .into_iter()
        .filter_map(|range| records.get(range))
        .collect())
}

/// The index of an uploaded page: the offset of each record and of the page's end. Refuses a
/// page over [`MAX_INPUT_PAGE_BYTES`], without items, with more than an input set may hold,
/// or with a record that breaks the format.
pub fn index(page: &[u8]) -> Result<Vec<u8>, String> {
    if page.len() > MAX_INPUT_PAGE_BYTES {
        return Err(format!(
            "a page is at most {MAX_INPUT_PAGE_BYTES} bytes; this one is {}",
            page.len()
        ));
    }
    let ranges = ranges(page)?;
    if ranges.is_empty() {
        return Err("a page holds at least one item".into());
    }
    if ranges.len() as u64 > MAX_INPUT_SET_ITEMS {
        return Err(format!("a page holds at most {MAX_INPUT_SET_ITEMS} items"));
    }
    let mut index = Vec::with_capacity(ranges.len().saturating_add(1).saturating_mul(4));
    for range in &ranges {
        push_offset(&mut index, range.start.saturating_sub(HEADER_BYTES));
    }
    push_offset(&mut index, page.len());
    Ok(index)
}

fn push_offset(index: &mut Vec<u8>, offset: usize) {
    // A page is at most 8 MiB.
    index.extend_from_slice(&u32::try_from(offset).unwrap_or(u32::MAX).to_le_bytes());
}

/// The bytes of a page's index that give where items `[from, to)` lie: read them (a range
/// read of the stored index), then [`span`] says which bytes of the page hold their records.
pub fn index_bytes(from: u64, to: u64) -> Range<u64> {
    from.saturating_mul(4)..to.saturating_add(1).saturating_mul(4)
}

/// The bytes of the page holding the records of the items whose [`index_bytes`] are `index`.
pub fn span(index: &[u8]) -> Option<Range<u64>> {
    let offset = |at: usize| {
        index
            .get(at..at.checked_add(4)?)
            .and_then(|bytes| bytes.try_into().ok())
            .map(|bytes| u64::from(u32::from_le_bytes(bytes)))
    };
    let first = offset(0)?;
    let last = offset(index.len().checked_sub(4)?)?;
    (index.len().is_multiple_of(4) && first <= last).then_some(first..last)
}

/// Splits items into pages of at most `max_bytes` of records each (an item is never split;
/// an item whose record alone is larger gets a page of its own).
pub fn pages<'a>(items: impl IntoIterator<Item = &'a [u8]>, max_bytes: usize) -> Vec<Vec<u8>> {
    let mut pages = Vec::new();
    let mut page = Vec::new();
    for item in items {
        let record = HEADER_BYTES.saturating_add(item.len());
        if !page.is_empty() && page.len().saturating_add(record) > max_bytes {
            pages.push(std::mem::take(&mut page));
        }
        push(&mut page, item);
    }
    if !page.is_empty() {
        pages.push(page);
    }
    pages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_say_what_is_wrong() {
        let items: [&[u8]; 3] = [b"{\"n\": 1}", b"", &[7; 300]];
        let records = encode(items);
        assert_eq!(records.len(), 3 * 4 + 8 + 300);
        assert_eq!(split(&records, 3).unwrap(), items);
        assert!(split(&records, 2).unwrap_err().contains("3 inputs"));
        assert!(ranges(&records[..records.len() - 1])
            .unwrap_err()
            .contains("item 2 claims 300 bytes"));
        assert!(ranges(&records[..2])
            .unwrap_err()
            .contains("item 0's length"));
        let big = vec![0u8; MAX_INPUT_BYTES + 1];
        assert!(ranges(&encode([big.as_slice()]))
            .unwrap_err()
            .contains("item 0 is 65537 bytes"));
        assert_eq!(split(&[], 0).unwrap(), Vec::<&[u8]>::new());
    }

    #[test]
    fn a_lease_cuts_its_records_out_of_a_page_by_the_index() {
        let items: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; usize::from(i)]).collect();
        let page = encode(items.iter().map(Vec::as_slice));
        let index = index(&page).unwrap();
        assert_eq!(index.len(), 11 * 4);
        let wanted = index_bytes(3, 7);
        let slice = &index[wanted.start as usize..wanted.end as usize];
        let cut = span(slice).unwrap();
        let records = &page[cut.start as usize..cut.end as usize];
        assert_eq!(
            split(records, 4).unwrap(),
            items[3..7].iter().map(Vec::as_slice).collect::<Vec<_>>()
        );
        assert_eq!(span(&[1, 2, 3]), None);
        assert!(super::index(&[]).unwrap_err().contains("at least one item"));
        assert!(super::index(&vec![0; MAX_INPUT_PAGE_BYTES + 1])
            .unwrap_err()
            .contains("at most"));
    }

    #[test]
    fn items_are_paged_whole_within_the_size() {
        let items: Vec<Vec<u8>> = (0..10).map(|_| vec![1; 6]).collect();
        let pages = pages(items.iter().map(Vec::as_slice), 25);
        // Two records of 10 bytes fit 25; a third does not.
        assert_eq!(pages.len(), 5);
        assert!(pages.iter().all(|p| p.len() == 20));
        let back: Vec<&[u8]> = pages.iter().flat_map(|p| split(p, 2).unwrap()).collect();
        assert_eq!(back, items.iter().map(Vec::as_slice).collect::<Vec<_>>());
        assert_eq!(super::pages([[9u8; 30].as_slice()], 25).len(), 1);
    }
}
