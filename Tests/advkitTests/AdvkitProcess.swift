import Foundation
import XCTest

/// The built `advkit` beside the test bundle (the bundle runs from the build folder, beside the products).
func advkitExecutable() throws -> URL {
    let url = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("advkit")
    guard FileManager.default.fileExists(atPath: url.path) else {
        XCTFail("\(url.path) is not built: run `swift build --build-tests` first")
        throw CocoaError(.fileNoSuchFile)
    }
    return url
}

/// Runs the built `advkit` with `args` at 2 threads; returns (exit code, stdout, stderr).
@discardableResult
func runAdvkit(_ args: [String]) throws -> (Int32, String, String) {
    let p = Process()
    p.executableURL = try advkitExecutable()
    p.arguments = args
    p.environment = ["ADVKIT_THREADS": "2", "PATH": "/usr/bin:/bin"]
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

/// A JSON object the tool wrote.
func readJSONObject(_ path: String) throws -> [String: Any] {
    try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
}
