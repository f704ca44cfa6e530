//! The small fixed catalogue the data set buys from.

/// One product on the network.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CatalogueItem {
    pub item_id: u64,
    pub title: &'static str,
    pub price_fen: i64,
    /// Commission rate in 1/10000.
    pub rate_bp: u32,
}

pub(crate) const CATALOGUE: &[CatalogueItem] = &[
    CatalogueItem {
        item_id: 600_112_345_001, title: "无线蓝牙耳机 主动降噪 长续航", price_fen: 19_900, rate_bp: 800
    },
    CatalogueItem {
        item_id: 600_112_345_002, title: "纯棉短袖T恤 男女同款 宽松", price_fen: 5_990, rate_bp: 2000
    },
    CatalogueItem { item_id: 600_112_345_003, title: "保温杯 316不锈钢 500ml", price_fen: 8_900, rate_bp: 1500 },
    CatalogueItem {
        item_id: 600_112_345_004, title: "机械键盘 87键 热插拔 RGB", price_fen: 32_900, rate_bp: 600
    },
    CatalogueItem { item_id: 600_112_345_005, title: "洗衣凝珠 3合1 52颗装", price_fen: 4_590, rate_bp: 1200 },
    CatalogueItem {
        item_id: 600_112_345_006, title: "智能手环 心率血氧监测", price_fen: 24_900, rate_bp: 500
    },
    CatalogueItem {
        item_id: 600_112_345_007, title: "坚果礼盒 每日坚果 750g", price_fen: 12_800, rate_bp: 1800
    },
    CatalogueItem {
        item_id: 600_112_345_008, title: "儿童绘本 全10册 睡前故事", price_fen: 6_800, rate_bp: 2500
    },
    CatalogueItem {
        item_id: 600_112_345_009, title: "空气炸锅 家用 5L 大容量", price_fen: 29_900, rate_bp: 700
    },
    CatalogueItem {
        item_id: 600_112_345_010, title: "防晒霜 SPF50+ 清爽不油腻", price_fen: 13_900, rate_bp: 2000
    },
    CatalogueItem {
        item_id: 600_112_345_011, title: "跑步鞋 男款 轻便透气", price_fen: 39_900, rate_bp: 1000
    },
    CatalogueItem { item_id: 600_112_345_012, title: "抽纸 原木 24包整箱", price_fen: 3_990, rate_bp: 300 },
    CatalogueItem {
        item_id: 600_112_345_013, title: "手机壳 磁吸 防摔 透明", price_fen: 2_900, rate_bp: 3000
    },
    CatalogueItem { item_id: 600_112_345_014, title: "电动牙刷 声波 成人款", price_fen: 15_900, rate_bp: 900 },
    CatalogueItem { item_id: 600_112_345_015, title: "咖啡豆 意式拼配 1kg", price_fen: 9_800, rate_bp: 1500 },
    CatalogueItem { item_id: 600_112_345_016, title: "扫地机器人 自动集尘", price_fen: 169_900, rate_bp: 400 },
];
