//! The confusion matrix of a test pass: how many images of each true class got each predicted
//! class, printed with the class names beside each class's accuracy.

/// `counts[t * classes + p]`: test images of true class `t` predicted as `p`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confusion {
    pub classes: usize,
    pub counts: Vec<u64>,
}

impl Confusion {
    pub fn new(classes: usize, preds: &[u32], labels: &[u8]) -> Confusion {
        let mut counts = vec![0u64; classes * classes];
        for (&p, &l) in preds.iter().zip(labels) {
            if (l as usize) < classes && (p as usize) < classes {
                counts[l as usize * classes + p as usize] += 1;
            }
        }
        Confusion { classes, counts }
    }

    pub fn row(&self, true_class: usize) -> &[u64] {
        &self.counts[true_class * self.classes..(true_class + 1) * self.classes]
    }

    /// (correct, total) for each true class.
    pub fn per_class(&self) -> Vec<(u64, u64)> {
        (0..self.classes).map(|t| (self.row(t)[t], self.row(t).iter().sum())).collect()
    }

    /// The matrix as a table: one row per true class (its index and name), one column per
    /// predicted class (by index), the class's accuracy last.
    pub fn render(&self, names: &[String]) -> String {
        let name = |i: usize| names.get(i).map(String::as_str).unwrap_or("?");
        let label_width = (0..self.classes).map(|i| name(i).len()).max().unwrap_or(1) + 3;
        let width = self.counts.iter().max().map_or(1, |m| m.to_string().len()).max(2) + 1;
        let mut s = String::from("Confusion matrix (rows: true class, columns: predicted class):\n");
        s += &" ".repeat(label_width);
        for p in 0..self.classes {
            s += &format!("{p:>width$}");
        }
        s += "  accuracy\n";
        for (t, (hit, total)) in self.per_class().into_iter().enumerate() {
            s += &format!("{:<label_width$}", format!("{t} {}", name(t)));
            for c in self.row(t) {
                s += &format!("{c:>width$}");
            }
            if total == 0 {
                s += "  -\n";
            } else {
                s += &format!("  {:>6.1} %\n", 100.0 * hit as f64 / total as f64);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_true_classes_and_columns_predictions() {
        let c = Confusion::new(3, &[0, 1, 1, 2, 0], &[0, 1, 0, 2, 2]);
        assert_eq!(c.counts, vec![1, 1, 0, 0, 1, 0, 1, 0, 1]);
        assert_eq!(c.per_class(), vec![(1, 2), (1, 1), (1, 2)]);
        let names: Vec<String> = ["cat", "dog", "bird"].iter().map(|s| s.to_string()).collect();
        let t = c.render(&names);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5, "{t}");
        assert_eq!(lines[2], "0 cat    1  1  0    50.0 %", "{t}");
        assert_eq!(lines[4], "2 bird   1  0  1    50.0 %", "{t}");
    }

    #[test]
    fn a_class_without_test_images_says_so() {
        let c = Confusion::new(2, &[0], &[0]);
        assert!(c.render(&[]).lines().nth(3).unwrap().ends_with("  -"));
    }
}
