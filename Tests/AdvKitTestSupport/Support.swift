import AdvKit
