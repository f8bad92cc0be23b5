package com.shop.pay;

public class PriceCalculator {
    private final int[] prices = new int[2];

    public int total(int count) {
        return prices[count] * 100;  // ArrayIndexOutOfBoundsException for count >= 2
    }

    public int discounted(int count) {
        return total(count) - 5;
    }
}
