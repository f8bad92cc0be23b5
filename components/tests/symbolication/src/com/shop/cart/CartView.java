package com.shop.cart;

import com.shop.pay.PriceCalculator;

public class CartView {
    private final PriceCalculator calculator = new PriceCalculator();

    public int render(int items) {
        return calculator.discounted(items);
    }

    static int checkout(CartView view) {
        return view.render(3) * 2;
    }

    public static void main(String[] args) {
        System.out.println(checkout(new CartView()));
    }
}
