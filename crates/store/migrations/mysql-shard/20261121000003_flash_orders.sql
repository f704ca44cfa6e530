-- Orders made from flash-sale reservations name their reservation: their units come from the
-- sale's carved-out stock, not from a stock reservation, and go back to the sale if unpaid.
ALTER TABLE orders ADD COLUMN flash_reservation_id BIGINT NULL;
