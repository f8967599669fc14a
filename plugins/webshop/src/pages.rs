//! The four page types as WebShop's "text" observation mode shows them: visible texts joined by " [SEP] ", and
//! the clickables of each page (lower-cased button texts, ASINs and option values).

use crate::catalogue::{Catalogue, Product};

/// Results shown per page.
pub const RESULTS_PER_PAGE: usize = 10;

/// Which page the agent is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// The search page.
    Search,
    /// A results page (0-based page number).
    Results { page: usize },
    /// A product's item page.
    Item { product: usize },
    /// A product's description, features or reviews.
    Sub { product: usize, kind: SubPage },
}

/// The three sub-pages of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubPage {
    /// The description paragraph.
    Description,
    /// The bullet-point features.
    Features,
    /// The reviews (none: every product is rated N.A.).
    Reviews,
}

impl SubPage {
    /// The button text on the item page.
    pub fn button(self) -> &'static str {
        match self {
            Self::Description => "Description",
            Self::Features => "Features",
            Self::Reviews => "Reviews",
        }
    }

    /// All three, in page order.
    pub const ALL: [SubPage; 3] = [Self::Description, Self::Features, Self::Reviews];
}

/// What a page shows depends on the instruction and, for results pages, on the current result list.
pub struct View<'a> {
    /// The catalogue.
    pub catalogue: &'a Catalogue,
    /// The instruction text.
    pub instruction: &'a str,
    /// The ranked results of the last search.
    pub results: &'a [usize],
}

impl View<'_> {
    /// The page's text.
    pub fn render(&self, page: Page) -> String {
        let head = format!("Instruction: [SEP] {} [SEP] Back to Search", self.instruction);
        match page {
            Page::Search => format!("WebShop [SEP] Instruction: [SEP] {} [SEP] Search", self.instruction),
            Page::Results { page } => {
                let mut parts = vec![head, format!("Page {} (Total results: {})", page + 1, self.results.len())];
                if page > 0 {
                    parts.push("< Prev".into());
                }
                if self.has_next(page) {
                    parts.push("Next >".into());
                }
                for &id in self.page_results(page) {
                    let product = &self.catalogue.products[id];
                    parts.extend([product.asin.clone(), product.title.clone(), product.price_tag.text()]);
                }
                parts.join(" [SEP] ")
            }
            Page::Item { product } => {
                let product = &self.catalogue.products[product];
                let mut parts = vec![head, "< Prev".into()];
                for (name, values) in &product.options {
                    parts.push(name.clone());
                    parts.extend(values.iter().cloned());
                }
                parts.push(product.title.clone());
                parts.push(format!("Price: {}", product.price_tag.text()));
                parts.push("Rating: N.A.".into());
                parts.extend(SubPage::ALL.iter().map(|s| s.button().to_owned()));
                parts.push("Buy Now".into());
                parts.join(" [SEP] ")
            }
            Page::Sub { product, kind } => {
                let product = &self.catalogue.products[product];
                let mut parts = vec![head, "< Prev".into()];
                match kind {
                    SubPage::Description => parts.push(product.description.clone()),
                    SubPage::Features => parts.extend(product.features.iter().cloned()),
                    SubPage::Reviews => {}
                }
                parts.join(" [SEP] ")
            }
        }
    }

    /// The page's clickables, lower-cased, in page order.
    pub fn clickables(&self, page: Page) -> Vec<String> {
        match page {
            Page::Search => Vec::new(),
            Page::Results { page } => {
                let mut out = vec!["back to search".to_owned()];
                if page > 0 {
                    out.push("< prev".into());
                }
                if self.has_next(page) {
                    out.push("next >".into());
                }
                out.extend(self.page_results(page).iter().map(|&id| self.catalogue.products[id].asin.to_lowercase()));
                out
            }
            Page::Item { product } => {
                let product: &Product = &self.catalogue.products[product];
                let mut out = vec!["back to search".to_owned(), "< prev".into()];
                out.extend(product.options.iter().flat_map(|(_, values)| values.iter().cloned()));
                out.extend(SubPage::ALL.iter().map(|s| s.button().to_lowercase()));
                out.push("buy now".into());
                out
            }
            Page::Sub { .. } => vec!["back to search".to_owned(), "< prev".into()],
        }
    }

    /// The products on results page `page` (empty past the last page).
    /// Whether results page `page` (from 0) shows "Next >": only when results remain after it, as WebShop's
    /// results_page.html has it (`{% if (page * 10) < total %}`, its pages counted from 1).
    pub fn has_next(&self, page: usize) -> bool {
        (page + 1).saturating_mul(RESULTS_PER_PAGE) < self.results.len()
    }

    /// The results shown on page `page` (from 0).
    pub fn page_results(&self, page: usize) -> &[usize] {
        let start = page.saturating_mul(RESULTS_PER_PAGE).min(self.results.len());
        let end = (start + RESULTS_PER_PAGE).min(self.results.len());
        &self.results[start..end]
    }
}
