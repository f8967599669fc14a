//! The four page types as WebShop's "text" observation mode shows them: visible texts joined by " [SEP] ", and
//! the clickables of each page (lower-cased button texts, ASINs and option values); and the page shown after
//! buying.

use std::collections::BTreeMap;

use crate::catalogue::{Catalogue, Product};

/// Results shown per page by WebShop (`results_per_page`'s default).
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
    /// Results shown per results page.
    pub per_page: usize,
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
                // results_page.html shows "Next >" on every results page, past the last one and with no results
                // too (both branches of its `{% if page > 1 %}`); clicking it there shows an empty page.
                parts.push("Next >".into());
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
                out.push("next >".into());
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

    /// The results shown on page `page` (from 0).
    pub fn page_results(&self, page: usize) -> &[usize] {
        let start = page.saturating_mul(self.per_page).min(self.results.len());
        let end = (start + self.per_page).min(self.results.len());
        &self.results[start..end]
    }
}

/// The page shown after `click[buy now]`: WebShop's done_page.html as its text env renders it
/// (`convert_html_to_text(html, simple=True)`, every text node of the page, hidden ones included, joined by
/// " [SEP] ").
///
/// The text env's `SimServer.done` passes the template only the session's ASIN, its selected options and the
/// reward, so the MTurk code, the purchased product's attrs / category / query / product category and the goal
/// render as `None` or nothing, and the reward details as `None`; "instuction text" is the template's own
/// spelling. `options` maps option names to the values clicked; they are shown as Flask's `tojson` writes them.
pub fn done_page(asin: &str, options: &BTreeMap<String, String>, reward: f64) -> String {
    let options: BTreeMap<String, &str> = options.iter().map(|(k, v)| (k.to_lowercase(), v.as_str())).collect();
    [
        "Thank you for shopping with us!",
        "Your code:",
        "None",
        "(Paste it in your MTurk interface.)",
        "Purchased",
        "asin",
        asin,
        "options",
        &flask_tojson(&options),
        "attrs",
        "None",
        "category",
        "None",
        "query",
        "None",
        "product category",
        "None",
        "Target",
        "asin",
        "options",
        "attrs",
        "price upper",
        "instuction text",
        "category",
        "product category",
        "query",
        "Goal",
        "None",
        "Reward",
        "Your score (min 0.0, max 1.0)",
        &python_float(reward),
        "Reward Details",
        "None",
    ]
    .join(" [SEP] ")
}

/// A string map as Flask 2.1's `tojson` filter writes it: `json.dumps` with sorted keys, ASCII only and the
/// default separators, then `<`, `>`, `&` and `'` escaped as `\u003c`, `\u003e`, `\u0026` and `\u0027`.
pub fn flask_tojson(map: &BTreeMap<String, &str>) -> String {
    let mut out = String::from("{");
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&atod_core::python_json_string(key, true));
        out.push_str(": ");
        out.push_str(&atod_core::python_json_string(value, true));
    }
    out.push('}');
    out
}

/// `value` as Python's `str(float)` writes it: Rust's `{:?}` has the same shortest digits and the same switch to
/// exponent notation (below 1e-4, from 1e16), but writes the exponent as `e-5` where Python writes `e-05`.
pub fn python_float(value: f64) -> String {
    let text = format!("{value:?}");
    match text.split_once('e') {
        Some((mantissa, exponent)) => {
            let (sign, digits) = exponent.strip_prefix('-').map_or(("+", exponent), |d| ("-", d));
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => text,
    }
}
