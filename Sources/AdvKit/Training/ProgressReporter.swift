import Foundation

/// ProgressReporter of long work, drawn as a bar on a terminal and as plain lines otherwise (logs, CI, pipes).
/// Writes to standard error so that standard output stays clean for results.
public final class ProgressReporter {
    public enum Style: Sendable { case automatic, bar, lines, silent }

    private let title: String
    private let total: Int
    private let isTerminal: Bool
    private let style: Style
    private let start = Date()
    private var lastDraw = Date.distantPast
    private var lastLinePercent = -1

    public init(_ title: String, total: Int, style: Style = .automatic) {
        self.title = title
        self.total = Swift.max(total, 1)
        self.style = style
        self.isTerminal = style == .bar || (style == .automatic && isatty(STDERR_FILENO) != 0)
    }

    /// Reports `done` of `total` units, with a short status (a running loss).
    public func update(_ done: Int, status: String = "") {
        guard style != .silent else { return }
        let fraction = Double(Swift.min(done, total)) / Double(total)
        let elapsed = Date().timeIntervalSince(start)
        let eta = fraction > 0 ? elapsed / fraction - elapsed : 0
        if isTerminal {
            guard Date().timeIntervalSince(lastDraw) > 0.1 || done >= total else { return }
            lastDraw = Date()
            let width = 30, filled = Int(fraction * Double(width))
            let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
            ProgressReporter.write("\r\(title) [\(bar)] \(Int(fraction * 100))% \(ProgressReporter.duration(elapsed)) elapsed, \(ProgressReporter.duration(eta)) left \(status)\u{1B}[K")
        } else {
            let percent = Int(fraction * 100) / 25 * 25  // a line every quarter
            guard percent != lastLinePercent else { return }
            lastLinePercent = percent
            ProgressReporter.write("\(title): \(percent)% (\(done)/\(total)), \(ProgressReporter.duration(elapsed)) elapsed, ~\(ProgressReporter.duration(eta)) left \(status)\n")
        }
    }

    /// Ends the bar with a final line.
    public func finish(_ message: String) {
        guard style != .silent else { return }
        if isTerminal { ProgressReporter.write("\r\u{1B}[K") }
        ProgressReporter.write("\(title): \(message)\n")
    }

    static func write(_ s: String) { FileHandle.standardError.write(Data(s.utf8)) }

    static func duration(_ s: Double) -> String {
        let t = Int(s.rounded())
        return t >= 3600 ? "\(t / 3600)h\(t % 3600 / 60)m" : (t >= 60 ? "\(t / 60)m\(t % 60)s" : "\(t)s")
    }
}
